"""The run process's host baseline, measured on the machine that predicts.

A run process's resident memory before SAM 2 allocates anything (the interpreter, torch, sam2,
sam2tune and, on CUDA, the CUDA context's host side) depends on the machine and the versions, so
it is measured here, never carried from the calibration machine: a fresh process with the run
process's allocator settings imports what a run imports and reports its peak RSS (and on CUDA,
after creating the context, the device memory the context takes). Cached in
``<cache>/host_baseline.json`` per device kind and installation (``sys.prefix``), re-measured
when torch / sam2 / sam2tune / Python versions or the host change.

On the CPU the probe also measures this machine's host terms beyond the baseline (``local``:
short real SAM 2 runs at three sizes, :mod:`sam2tune.memory_model.host_probe`), cached in the
same entry under the same key: measured once per machine and versions, on the first call that
asks for them (``with_local=True``, the memory model's CPU predictions), about 45-60 s on an
idle 2-core CPU.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from typing import Any

__all__ = ["host_baseline", "measure_baseline"]

_MEMO: dict[str, dict[str, Any]] = {}

_PROBE = r"""
import json, sys
import sam2tune.runner.child  # everything a run process imports
from sam2tune.probes import peak_rss_bytes, rss_bytes
out = {"rss_bytes": peak_rss_bytes(), "resident_bytes": rss_bytes()}
if sys.argv[1] == "cuda":
    import torch
    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")
        free, total = torch.cuda.mem_get_info()
        out.update(rss_bytes=peak_rss_bytes(), resident_bytes=rss_bytes(),
                   cuda_context_bytes=int(total - free), cuda_total_bytes=int(total))
print(json.dumps(out))
"""


def _key(device_kind: str) -> dict[str, Any]:
    from sam2tune.provenance import environment

    env = environment()
    return {
        "device_kind": device_kind,
        "host": platform.node(),
        **{k: env.get(k) for k in ("sam2tune", "torch", "sam2", "python", "cpu")},
        # the installation: the file-backed library pages a process maps at import follow the
        # page cache's state of that venv's files (measured on one machine, same modules: 522
        # vs 714 MiB for two venvs; a fresh install's 636 MiB fell to 532 once its pages were
        # evicted and read again)
        "prefix": sys.prefix,
        # how peaks are read: a cache from before VmHWM (ru_maxrss carried a parent's peak
        # into the probe) is measured again
        "peak_rss": "VmHWM",
    }


def measure_baseline(device_kind: str = "cpu") -> dict[str, Any]:
    """Start a fresh run-like process and read its baseline (median of 3)."""
    from sam2tune.config.process import run_process_env

    vals = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, device_kind],
            capture_output=True,
            text=True,
            env=run_process_env(),
            check=True,
        )
        vals.append(json.loads(out.stdout.strip().splitlines()[-1]))
    vals.sort(key=lambda d: d["rss_bytes"])
    d = dict(vals[1])
    d["spread_bytes"] = vals[-1]["rss_bytes"] - vals[0]["rss_bytes"]
    d["figure"] = "measured on this machine"
    return d


def _load(path: Any) -> dict[str, Any]:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    return cache if isinstance(cache, dict) else {}


def _has_local(value: dict[str, Any]) -> bool:
    """Whether a cached entry has this version's probe runs (a probe failure kept in memory
    counts: the next process measures again); entries from before the runs kept their step
    times, or of other probe sizes, are measured again."""
    from sam2tune.memory_model.host_probe import PROBE_SIZES

    local = value.get("local")
    if not isinstance(local, dict):
        return False
    if "error" in local:
        return True
    runs = local.get("runs") or [{}]
    return (all("steps" in r for r in runs)
            and sorted(int(r.get("image_size", 0)) for r in runs) == sorted(PROBE_SIZES))


def host_baseline(
    device_kind: str = "cpu", refresh: bool = False, with_local: bool = False
) -> dict[str, Any]:
    """This machine's run-process baseline for ``device_kind`` (cached; measured when missing or
    when the versions changed). ``cuda`` on a machine without CUDA gives the CPU figure and says
    so (the CUDA context's host side is then unknown).

    Args:
        with_local: on the CPU, also this machine's measured host terms (``value["local"]``:
            the probe runs of :func:`sam2tune.memory_model.host_probe.measure_local_runs`),
            measured and added to the cached entry when it lacks them.
    """
    from sam2tune.paths import atomic_write_json, cache_dir

    want_local = with_local and device_kind == "cpu"
    memo = _MEMO.get(device_kind)
    if memo is not None and not refresh and (not want_local or _has_local(memo)):
        return memo
    path = cache_dir(None) / "host_baseline.json"
    cache = _load(path)
    key = _key(device_kind)
    # one entry per device kind and installation: two venvs on one machine keep their own
    entry = f"{device_kind} {sys.prefix}"
    hit: dict[str, Any] = cache.get(entry) or {}
    fresh = bool(hit.get("key") == key and not refresh)
    if fresh and (not want_local or _has_local(hit["value"])):
        _MEMO[device_kind] = hit["value"]
        return hit["value"]
    value = dict(hit["value"]) if fresh else measure_baseline(device_kind)
    if device_kind == "cuda" and "cuda_context_bytes" not in value and not fresh:
        value["figure"] += " (no CUDA here: host side of the CUDA context not included)"
    memo = value
    if want_local:
        from sam2tune.memory_model.host_probe import PROBE_SIZES, measure_local_runs

        # a minute of waiting the first time on a machine: say what it is (stderr: answers and
        # format=json stay clean on stdout)
        print(f"sam2tune: measuring this machine once ({len(PROBE_SIZES)} short SAM 2 runs "
              f"for its host memory and CPU speed terms, about a minute on 2 cores; cached in "
              f"{path})", file=sys.stderr, flush=True)
        try:
            value["local"] = measure_local_runs()
        except RuntimeError as e:  # kept in this process only: the next one measures again
            memo = dict(value, local={"error": str(e)})
    cache = _load(path)  # another process may have written meanwhile (the probe takes a while)
    cache[entry] = {"key": key, "value": value}
    _MEMO[device_kind] = memo
    try:
        atomic_write_json(path, cache)
    except OSError:
        pass  # a read-only cache still answers
    return memo

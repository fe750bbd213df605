"""The run process's host baseline, measured on the machine that predicts.

A run process's resident memory before SAM 2 allocates anything (the interpreter, torch, sam2,
sam2tune and, on CUDA, the CUDA context's host side) depends on the machine and the versions, so
it is measured here, never carried from the calibration machine: a fresh process with the run
process's allocator settings imports what a run imports and reports its peak RSS (and on CUDA,
after creating the context, the device memory the context takes). Cached in
``<cache>/host_baseline.json`` per device kind, re-measured when torch / sam2 / sam2tune /
Python versions or the host change.
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


def host_baseline(device_kind: str = "cpu", refresh: bool = False) -> dict[str, Any]:
    """This machine's run-process baseline for ``device_kind`` (cached; measured when missing or
    when the versions changed). ``cuda`` on a machine without CUDA gives the CPU figure and says
    so (the CUDA context's host side is then unknown)."""
    from sam2tune.paths import atomic_write_json, cache_dir

    if device_kind in _MEMO and not refresh:
        return _MEMO[device_kind]
    path = cache_dir(None) / "host_baseline.json"
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    key = _key(device_kind)
    hit = cache.get(device_kind)
    if hit and hit.get("key") == key and not refresh:
        _MEMO[device_kind] = hit["value"]
        return hit["value"]
    value = measure_baseline(device_kind)
    if device_kind == "cuda" and "cuda_context_bytes" not in value:
        value["figure"] += " (no CUDA here: host side of the CUDA context not included)"
    cache[device_kind] = {"key": key, "value": value}
    _MEMO[device_kind] = value
    try:
        atomic_write_json(path, cache)
    except OSError:
        pass  # a read-only cache still answers
    return value

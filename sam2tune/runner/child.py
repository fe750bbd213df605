"""Entry point of the isolated run process: ``python -m sam2tune.runner.child RUN_DIR``.

A fresh interpreter per run (clean CUDA and Hydra state, and independent of how the caller runs:
plain, joblib/loky or submitit workers). It reads ``RUN_DIR/input.pkl``, writes exactly one
message to ``RUN_DIR/result.pkl`` (atomically): the measures, an input error, or a failure with
its status. Heavy imports happen at module import, before the host-memory limit is applied, so
the budget limits the run's own allocations.
"""

from __future__ import annotations

import os
import pickle
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

# Everything a run imports is imported here, before the host-memory limit applies: under the
# limit, an import's allocation can fail as a bare SystemError instead of a MemoryError.
import hydra.utils  # noqa: F401
import PIL.Image  # noqa: F401
import psutil  # noqa: F401
import sam2.modeling.sam2_base  # noqa: F401
import sam2.sam2_video_predictor  # noqa: F401
import sam2.sam2_video_predictor_legacy  # noqa: F401
import sam2.utils.misc  # noqa: F401
import torch  # noqa: F401

from sam2tune import metrics, provenance  # noqa: F401
from sam2tune.adapter import build, frames, segments, session  # noqa: F401
from sam2tune.config.schema import RunConfig
from sam2tune.errors import InputError
from sam2tune.paths import atomic_write
from sam2tune.probes import peak_rss_bytes
from sam2tune.runner.limits import lift_limits
from sam2tune.runner.measure import measure_run
from sam2tune.scenario import Prompt
from sam2tune.video.sources import VideoData

__all__ = ["child_main", "classify_failure"]

_OOM_TEXT = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "std::bad_alloc",
    "unable to allocate",
    "failed to allocate",
    "allocation failed",
    "memory allocation",
    "not enough memory",
    # CUDA libraries that allocate through PyTorch's allocator (workspaces) under a budget
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
    "cusolver_status_alloc_failed",
)


def classify_failure(exc: BaseException, host_budget: bool = False) -> str:
    """``oom`` for CUDA / host out-of-memory (however the allocator words it), else ``error``.

    Under a host budget, CPython reports some failed allocations as a bare ``SystemError``
    ("... without setting an exception"): those are out-of-memory too.
    """
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return "oom"
    text = str(exc).lower()
    if any(s in text for s in _OOM_TEXT):
        return "oom"
    if host_budget and isinstance(exc, SystemError) and "without" in text and "exception" in text:
        return "oom"
    if host_budget and "could not create a primitive" in text:  # oneDNN's failed allocation
        return "oom"
    return "error"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"[:500]


def child_main(
    cfg_dict: dict[str, Any],
    video: VideoData,
    prompts: list[Prompt],
    refs_dir: str,
    cache_root: str,
    run_dir: str,
) -> dict[str, Any]:
    """Measure one run and return the message ``{"kind": ..., ...}`` for the parent."""
    log = sys.stderr
    cfg = RunConfig.from_dict(cfg_dict)
    budget = cfg.limits.host_budget_bytes
    if budget:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        resource.setrlimit(resource.RLIMIT_DATA, (budget, hard))
    context: dict[str, Any] = {}
    try:
        body = measure_run(
            cfg, video, prompts, Path(refs_dir), Path(cache_root), context, Path(run_dir)
        )
        msg: dict[str, Any] = {"kind": "ok", "body": body}
    except InputError as e:
        msg = {"kind": "input_error", "message": str(e)}
    except BaseException as e:  # noqa: BLE001 - every failure becomes a recorded status
        lift_limits()
        tb = traceback.format_exc()
        print(tb, file=log)
        status = classify_failure(e, host_budget=bool(budget))
        error = _one_line(e)
        if status == "oom" and budget:
            error += f" [over limits.host_memory_budget={cfg.limits.host_memory_budget}?]"
        msg = {
            "kind": "failed",
            "status": status,
            "error": error,
            "traceback": tb[-8000:],
            "measures": {**context, **_partial_measures()},
        }
    lift_limits()
    return msg


def _partial_measures() -> dict[str, Any]:
    m: dict[str, Any] = {"peak_host_rss_bytes": peak_rss_bytes()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        m["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
        m["cuda_max_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
    return m


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux), so a killed sweep
    or CLI never leaves a run working on its own."""
    parent = os.getppid()
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: the parent's own cleanup still kills us
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def main() -> None:
    """``python -m sam2tune.runner.child RUN_DIR``: read input.pkl, run, write result.pkl."""
    import signal

    _die_with_parent()
    # a batch scheduler's warning before its time limit is for the parent, which records it
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    run_dir = Path(sys.argv[1])
    with open(run_dir / "input.pkl", "rb") as f:
        cfg_dict, video, prompts, refs_dir, cache_root = pickle.load(f)
    msg = child_main(cfg_dict, video, prompts, refs_dir, cache_root, run_dir=str(run_dir))

    def dump(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            pickle.dump(msg, f)

    atomic_write(run_dir / "result.pkl", dump)


if __name__ == "__main__":
    main()

"""Entry point of the isolated run process (started with the ``spawn`` method).

Heavy imports happen at module import, before the host-memory limit is applied, so the budget
limits the run's own allocations. The process sends exactly one message back: the measures, an
input error, or a failure with its status.
"""

from __future__ import annotations

import os
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

import torch  # noqa: F401  (imported before the memory limit applies)

from sam2tune.adapter import build  # noqa: F401
from sam2tune.config.schema import RunConfig
from sam2tune.errors import InputError
from sam2tune.probes import peak_rss_bytes
from sam2tune.runner.experiment import run_experiment
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
)


def classify_failure(exc: BaseException) -> str:
    """``oom`` for CUDA / host out-of-memory (however the allocator words it), else ``error``."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return "oom"
    text = str(exc).lower()
    if any(s in text for s in _OOM_TEXT):
        return "oom"
    return "error"


def _lift_host_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (hard, hard))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"[:500]


def child_main(
    cfg_dict: dict[str, Any],
    video: VideoData,
    prompts: list[Prompt],
    refs_dir: str,
    cache_root: str,
    log_path: str,
    conn,
) -> None:
    """Run one experiment and send ``{"kind": ..., ...}`` through ``conn``."""
    log = open(log_path, "a", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    cfg = RunConfig.from_dict(cfg_dict)
    budget = cfg.limits.host_budget_bytes
    if budget:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        resource.setrlimit(resource.RLIMIT_DATA, (budget, hard))
    context: dict[str, Any] = {}
    try:
        body = run_experiment(
            cfg, video, prompts, Path(refs_dir), Path(cache_root), context, Path(log_path).parent
        )
        msg: dict[str, Any] = {"kind": "ok", "body": body}
    except InputError as e:
        msg = {"kind": "input_error", "message": str(e)}
    except BaseException as e:  # noqa: BLE001 - every failure becomes a recorded status
        _lift_host_limit()
        tb = traceback.format_exc()
        print(tb, file=log)
        status = classify_failure(e)
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
    _lift_host_limit()
    conn.send(msg)
    conn.close()


def _partial_measures() -> dict[str, Any]:
    m: dict[str, Any] = {"peak_host_rss_bytes": peak_rss_bytes()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        m["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
        m["cuda_max_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
    return m

"""The batch scheduler a run executes under, seen from inside its job (Slurm).

A sweep sent to Slurm (``hydra/launcher=slurm``, Hydra's submitit launcher) runs each point in a
job with a time limit. A run must not be cut off by it without a record: the run's own timeout
is shortened to end :data:`MARGIN_S` before the job's limit (``squeue``'s time left when the
run starts), and ``SIGTERM`` from Slurm (at the limit, or ``scancel``) stops the run process
and is recorded. ``SIGUSR2`` (submitit asks Slurm for it ``signal_delay_s`` before the limit,
and Slurm may send it up to a minute early) only warns: the deadline above already acts on it,
and submitit's own handler would end the job without a row.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from typing import Any

__all__ = ["slurm_job", "job_label", "time_left_s", "MARGIN_S", "stop_event", "watch_signals"]

MARGIN_S = 15.0  # stop this long before the job's limit: time to record the row

_STOP = threading.Event()
_REASON: list[str] = []


def slurm_job() -> dict[str, Any] | None:
    """This process's Slurm job (ids, node, partition, time limit), or None outside Slurm."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return None
    keys = {
        "job_id": "SLURM_JOB_ID",
        "array_job_id": "SLURM_ARRAY_JOB_ID",
        "array_task_id": "SLURM_ARRAY_TASK_ID",
        "node": "SLURMD_NODENAME",
        "partition": "SLURM_JOB_PARTITION",
        "cluster": "SLURM_CLUSTER_NAME",
        "submit_dir": "SLURM_SUBMIT_DIR",
    }
    return {"scheduler": "slurm", **{k: env[v] for k, v in keys.items() if v in env}}


def job_label(job: dict[str, Any] | None) -> str | None:
    """``slurm:<array job>_<task>`` (or ``slurm:<job>``) for the results table."""
    if job is None:
        return None
    if "array_job_id" in job and "array_task_id" in job:
        return f"slurm:{job['array_job_id']}_{job['array_task_id']}"
    return f"slurm:{job['job_id']}"


def _parse_left(text: str) -> float | None:
    """Seconds in squeue's ``%L`` (``[days-]hours:minutes:seconds``, ``minutes:seconds``)."""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text.strip())
    if not m:
        return None  # UNLIMITED, NOT_SET, INVALID
    d, h, mi, s = (int(x) if x else 0 for x in m.groups())
    return float(((d * 24 + h) * 60 + mi) * 60 + s)


def time_left_s() -> float | None:
    """Seconds before this Slurm job's time limit (None outside Slurm or without a limit)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%L"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return _parse_left(out.splitlines()[0]) if out.strip() else None


def stop_event() -> tuple[threading.Event, list[str]]:
    """The event a scheduler's signal sets, and the reason it gave."""
    return _STOP, _REASON


def watch_signals() -> None:
    """Under Slurm, in the main thread: ``SIGTERM`` stops the current run (recorded as
    ``timeout``: Slurm's time limit or a ``scancel``); ``SIGUSR2`` is ignored. Replaces
    submitit's handlers, which would end the job without a row."""
    if slurm_job() is None or threading.current_thread() is not threading.main_thread():
        return

    def on_term(signum: int, _frame: Any) -> None:
        _REASON[:] = [
            f"stopped by Slurm's SIGTERM (job {job_label(slurm_job())}: its time limit, or "
            "scancel)"
        ]
        _STOP.set()

    signal.signal(signal.SIGTERM, on_term)
    # ignored here and so in the run processes started from here (an ignored signal stays
    # ignored across exec, even while the child is still importing torch)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)

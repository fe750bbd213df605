"""Run folders left by dead processes: ``<results_dir>/.tmp/<run_id>/`` exists while a run is in
flight and is moved into ``runs/`` (or removed) when it ends. One whose owning process is gone
(killed by SIGKILL, a lost node) is stale: ``load_results`` / ``report`` say so, and the next
sweep into that dir removes it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

__all__ = ["OWNER_FILE", "claim", "stale_runs", "remove_stale"]

OWNER_FILE = "owner.json"
#: a folder without an owner file (written by an older sam2tune) is stale after this long
UNOWNED_STALE_S = 24 * 3600


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def claim(tmp_dir: Path) -> None:
    """Mark ``tmp_dir`` as this process's (host, pid and the process's start time, so a reused
    pid is not mistaken for the owner)."""
    pid = os.getpid()
    owner = {"host": socket.gethostname(), "pid": pid, "create_time": _create_time(pid)}
    (tmp_dir / OWNER_FILE).write_text(json.dumps(owner))


def _is_stale(d: Path) -> bool:
    try:
        owner = json.loads((d / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return time.time() - d.stat().st_mtime > UNOWNED_STALE_S
    if owner.get("host") != socket.gethostname():
        return False  # another node's run: its process cannot be checked from here
    alive = _create_time(int(owner.get("pid", -1)))
    return alive is None or abs(alive - float(owner.get("create_time") or 0.0)) > 1.0


def stale_runs(results_dir: str | os.PathLike) -> list[Path]:
    """The in-flight run folders of ``results_dir`` whose process is gone."""
    tmp = Path(results_dir) / ".tmp"
    if not tmp.is_dir():
        return []
    return sorted(d for d in tmp.iterdir() if d.is_dir() and _is_stale(d))


def remove_stale(results_dir: str | os.PathLike) -> list[Path]:
    """Remove the stale run folders (only those whose process is gone); returns them."""
    gone = stale_runs(results_dir)
    for d in gone:
        shutil.rmtree(d, ignore_errors=True)
    return gone

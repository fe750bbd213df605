"""Where sam2tune keeps caches (checkpoints, generated videos) and how it writes files safely."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "cache_dir",
    "atomic_write",
    "atomic_write_text",
    "atomic_write_json",
    "check_writable_dir",
    "check_results_dir",
    "report_path",
]


def cache_dir(override: str | None = None) -> Path:
    """The cache root: ``override``, else ``$XDG_CACHE_HOME/sam2tune``, else
    ``~/.cache/sam2tune``."""
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sam2tune"


def _default_mode() -> int:
    """0666 minus the process umask: the mode an ordinary ``open(..., "w")`` would give."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write: Callable[[Path], object], suffix: str = ".tmp") -> None:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file in the same folder (named
    ``.<name>.<random><suffix>``), which then replaces ``path`` in one rename, so readers never
    see half a file. The temporary file is removed on any failure (Ctrl-C included).

    The file gets the mode an ordinary ``open(..., "w")`` would give (``mkstemp`` makes 0600).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (non-JSON values as ``str``) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False, default=str) + "\n")


def report_path(results_dir: str | Path, run_id: str) -> Path:
    """Where run ``run_id``'s record is: ``<results_dir>/runs/<run_id>/report.json``."""
    return Path(results_dir) / "runs" / run_id / "report.json"


def check_writable_dir(path: Path, name: str) -> None:
    """Create ``path`` if needed and check that a file can be written in it.

    Raises:
        InputError: one line naming the input.
    """
    from sam2tune.errors import InputError

    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise InputError(f"{name}: cannot write to {str(path)!r} ({e.strerror or e})") from None


def check_results_dir(path: str | Path, name: str = "results_dir") -> None:
    """``path`` is (or can become) a folder this process writes into, checked without creating
    anything: an existing file, or a read-only nearest existing folder, is refused.

    Raises:
        InputError: one line naming the input.
    """
    from sam2tune.errors import InputError

    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"{name}: {str(path)!r} is a file, not a folder")
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{name}: {str(probe)!r} (in {str(path)!r}) is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{name}: cannot write to {str(probe)!r} (permission denied)")

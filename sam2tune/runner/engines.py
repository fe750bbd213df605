"""The launchers a sweep can scale out on, checked before the first point: a Slurm controller
that answers, a worker count joblib accepts. One line naming the input and what to do."""

from __future__ import annotations

import shutil
import subprocess

from sam2tune.errors import InputError

__all__ = ["check_launcher", "launcher_of"]

SLURM_PING_TIMEOUT_S = 10


def launcher_of(overrides: list[str]) -> str | None:
    """The ``hydra/launcher=NAME`` a sweep asks for (None: Hydra's default, one process)."""
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key == "hydra/launcher":
            return value
    return None


def _value(overrides: list[str], key: str) -> str | None:
    for o in overrides:
        k, _, v = o.lstrip("+~").partition("=")
        if k == key:
            return v
    return None


def _check_slurm() -> None:
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        raise InputError(
            "hydra/launcher=slurm: Slurm's sbatch / scontrol are not on PATH (run on a cluster's "
            "login node, or drop hydra/launcher=slurm to run the points here)"
        )
    try:
        out = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True,
            timeout=SLURM_PING_TIMEOUT_S,
        )
        text = (out.stdout + out.stderr).strip()
        up = out.returncode == 0 and " is UP" in text
    except subprocess.TimeoutExpired:
        text, up = f"no answer within {SLURM_PING_TIMEOUT_S} s", False
    if not up:
        first = text.splitlines()[0] if text else f"exit {out.returncode}"
        raise InputError(
            f"hydra/launcher=slurm: no Slurm controller answers (`scontrol ping`: {first}); "
            "check SLURM_CONF / slurmctld, or drop hydra/launcher=slurm to run the points here"
        )


def _check_joblib(overrides: list[str]) -> None:
    v = _value(overrides, "hydra.launcher.n_jobs")
    if v is None:
        return
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < 1 and n != -1:
        raise InputError(
            f"hydra.launcher.n_jobs: workers must be >= 1 (or -1: one per CPU), got {v!r}"
        )


def check_launcher(overrides: list[str]) -> None:
    """The sweep's launcher can run: refused in one line before any point (or file) exists."""
    name = launcher_of(overrides)
    if name == "slurm":
        _check_slurm()
    elif name == "local_workers":
        _check_joblib(overrides)

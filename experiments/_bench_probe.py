"""What the benches that judge the host probe share (``bench_host_terms.py``,
``bench_speed_local.py``): their common options and this machine's probe, measured once and
cached (:func:`sam2tune.memory_model.baseline.host_baseline`), with the CPU it ran on."""

from __future__ import annotations

import argparse
import re
from typing import Any

from sam2tune.memory_model.baseline import host_baseline
from sam2tune.provenance import environment


def add_probe_options(ap: argparse.ArgumentParser, points: int) -> None:
    """``--seed``, ``--points`` (default ``points``), ``--refresh-probe``, ``--no-write``."""
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--points", type=int, default=points)
    ap.add_argument("--refresh-probe", action="store_true", help="re-measure the probe first")
    ap.add_argument("--no-write", action="store_true")


def this_probe(refresh: bool) -> tuple[dict[str, Any], str, str]:
    """(this machine's probe runs, its CPU, the CPU as a file-name slug); exits with the
    probe's error when it failed."""
    probe = host_baseline("cpu", refresh=refresh, with_local=True).get("local", {})
    if "error" in probe:
        raise SystemExit(f"the host probe failed: {probe['error']}")
    cpu = str(environment().get("cpu") or "unknown")
    return probe, cpu, cpu_slug(cpu)


def cpu_slug(cpu: str | None = None) -> str:
    """This machine's CPU (or ``cpu``) as a file-name slug: ``AMD EPYC`` -> ``amd-epyc``."""
    name = cpu if cpu is not None else str(environment().get("cpu") or "unknown")
    return re.sub(r"[^a-z0-9]+", "-", name.lower())

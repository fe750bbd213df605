"""How an isolated run process is started: its environment (fixed glibc allocator settings), the
same for every run and for the host-baseline probe that predicts it."""

from __future__ import annotations

import os

__all__ = ["RUN_ALLOCATOR_ENV", "run_process_env"]

#: glibc malloc settings fixed in every run process, so host RSS does not depend on machine load
#: or history: by default glibc gives a thread that finds its arena locked a new arena (up to 8
#: per core), the likely reason one run's peak RSS was once seen at 0.95 GiB idle and 1.15 GiB
#: beside other heavy processes. One arena, and fixed mmap / trim thresholds (large tensors are
#: mmapped and returned when freed instead of the threshold adapting). Measured with these:
#: run-to-run spread 0.1 % idle, 0.3 % loaded (experiments/bench_host_stability.py). Recorded
#: in each report's environment (allocator_env).
RUN_ALLOCATOR_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 20),
}


def run_process_env() -> dict[str, str]:
    """The environment of an isolated run process: ours plus :data:`RUN_ALLOCATOR_ENV`."""
    return {**os.environ, **RUN_ALLOCATOR_ENV}



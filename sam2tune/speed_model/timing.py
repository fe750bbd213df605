"""Steady-state speed from a run's per-frame step times. The first two propagated frames are a
stated warm-up, left out of ``fps`` and reported apart: the first is the prompted frame, whose
output SAM 2 computed when it was prompted (fast), the second the first tracked frame (kernel
selection, allocator growth, lazy initialisation: 1.10 s against 0.06 s for the next frames of a
bfloat16 run on the H200, ``results/gpu-nvidia-h200``)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

__all__ = ["SteadyTiming", "steady_timing", "steady_median", "WARMUP_FRAMES", "FPS_METHOD"]

#: frames at the start of propagation left out of fps
WARMUP_FRAMES = 2
FPS_METHOD = "steady: 1 / the median step time, the first two propagated frames excluded"


@dataclass(frozen=True)
class SteadyTiming:
    """Speed of the timed frames (untracked propagation steps) of one run."""

    #: frames per second of the typical steady frame: 1 / the median step time (robust to the
    #: odd slow step: a page fault, another process; the spread says how wide they were)
    fps: float | None
    #: the warm-up frames' step time (s); None when there were too few frames to exclude them
    warmup_s: float | None
    #: relative spread of the steady step times: (90th - 10th percentile) / median
    spread: float | None
    #: steady frames the figure rests on
    frames: int
    method: str


def steady_timing(steps: list[float]) -> SteadyTiming:
    """The steady timing of ``steps`` (seconds per timed frame, in propagation order)."""
    steps = [float(s) for s in steps if s is not None and s > 0]
    if not steps:
        return SteadyTiming(None, None, None, 0, "no timed frames")
    if len(steps) <= WARMUP_FRAMES:  # nothing after the warm-up: the figure includes it
        return SteadyTiming(
            len(steps) / sum(steps),
            None,
            None,
            len(steps),
            "every timed frame (too few to exclude a warm-up)",
        )
    warm, rest = steps[:WARMUP_FRAMES], steps[WARMUP_FRAMES:]
    spread = None
    if len(rest) >= 3:
        q = statistics.quantiles(rest, n=10, method="inclusive")
        spread = (q[-1] - q[0]) / statistics.median(rest)
    return SteadyTiming(1.0 / statistics.median(rest), sum(warm), spread, len(rest), FPS_METHOD)


def steady_median(values: list[float]) -> float | None:
    """The median of a per-frame figure (one value per timed frame, in propagation order) over
    the frames ``fps`` rests on: the warm-up frames left out, unless there are too few to.
    None without values."""
    if not values:
        return None
    rest = values[WARMUP_FRAMES:] if len(values) > WARMUP_FRAMES else values
    return float(statistics.median(rest))

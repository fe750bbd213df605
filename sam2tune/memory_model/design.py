"""Designed calibration and validation sets of the memory model (explicit points, not a grid).

``CALIBRATION`` covers every axis the model has a term for, each varied where the others stay
cheap: all four model sizes (the large ones at small sizes and few frames), conditioning frames
(re-prompting every 2 to 8 frames, with and without ``max_cond_frames_in_attn``), resolutions
from 256 to 1024 px (few frames at the large ones), 1 to 8 objects with both predictors,
bfloat16, offload_state, offload_video, release / stream / segments. It finishes in about
30 minutes on a 2-core CPU.

``validation_points(seed)`` draws a held-out set at random across the space, every point off the
calibration points (resolutions, lengths and re-prompting periods that the calibration never
uses), and adds one extrapolation test per axis (:data:`EXTRAPOLATION`): 1024 px, >= 20
conditioning frames, 8 objects, >= 200 frames and a model size the fit did not see. Each
extrapolation test names the calibration subset it is fitted on (``fit_on``), so the check never
shares the calibration point it tests.

    sam2tune calibrate design=calibration results_dir=results/cpu-calibration
    sam2tune calibrate design=validation results_dir=results/cpu-validation
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Point",
    "CALIBRATION",
    "EXTRAPOLATION",
    "ISSUE_TABLE",
    "validation_points",
    "design_points",
    "DESIGNS",
]

#: every run of a design: no reference pass (the model needs memory, not agreement)
COMMON = ["probe.reference=false"]


@dataclass(frozen=True)
class Point:
    """One run of a design: its overrides, the axis it exercises and (extrapolation tests) the
    calibration subset the fit may use."""

    overrides: tuple[str, ...]
    axis: str = "base"
    fit_on: dict[str, int] = field(default_factory=dict)  # e.g. {"image_size": 512}: fit <= 512

    def args(self) -> list[str]:
        """The run overrides of this point (with the design's fixed settings)."""
        return list(self.overrides) + COMMON


def _p(axis: str, s: str, **fit_on: int) -> Point:
    return Point(tuple(s.split()), axis, dict(fit_on))


_T = "model=sam2.1_tiny"


def _tiny(axis: str, rows: tuple[tuple[int, int, int, str], ...]) -> list[Point]:
    """SAM 2.1 tiny points from (image_size, frames, objects, other overrides) rows."""
    return [
        _p(axis, f"{_T} model.image_size={s} video.num_frames={n} video.num_objects={k} {o}")
        for s, n, k, o in rows
    ]


CALIBRATION: list[Point] = [
    # base: resolution x length x objects, stock, per-object predictor
    *[
        _p("base", f"{_T} model.image_size={s} video.num_frames={n} video.num_objects={k}")
        for s in (256, 384, 512)
        for n, k in ((8, 1), (24, 3))
    ],
    _p("base", f"{_T} model.image_size=256 video.num_frames=48 video.num_objects=2"),
    # resolution up to 1024 (few frames)
    _p("image_size", f"{_T} model.image_size=768 video.num_frames=4 video.num_objects=1"),
    _p("image_size", f"{_T} model.image_size=1024 video.num_frames=3 video.num_objects=1"),
    _p("image_size", f"{_T} model.image_size=1024 video.num_frames=3 video.num_objects=2"),
    # conditioning frames in attention: re-prompting, with and without the cap
    *[
        _p(
            "cond_frames",
            f"{_T} model.image_size={s} video.num_frames=24 video.num_objects=1 "
            f"scenario.reannotate_every={e}",
        )
        for s in (256, 384, 512)
        for e in (2, 4, 8)
    ],
    *[
        _p(
            "cond_frames",
            f"{_T} model.image_size={s} video.num_frames=24 video.num_objects=1 "
            f"scenario.reannotate_every=2 knobs.max_cond_frames_in_attn={m}",
        )
        for s in (256, 512)
        for m in (2, 4)
    ],
    _p(
        "cond_frames",
        f"{_T} model.image_size=256 video.num_frames=16 video.num_objects=3 "
        "scenario.reannotate_every=3",
    ),
    # model sizes (the large ones at small sizes and few frames)
    *[
        _p("model", f"model={m} model.image_size={s} video.num_frames=4 video.num_objects=1")
        for m in ("sam2.1_small", "sam2.1_base_plus", "sam2.1_large")
        for s in (256, 384)
    ],
    _p(
        "model",
        "model=sam2.1_large model.image_size=256 video.num_frames=8 video.num_objects=1 "
        "scenario.reannotate_every=2",
    ),
    _p(
        "model",
        "model=sam2.1_base_plus model.image_size=256 video.num_frames=6 video.num_objects=2",
    ),
    _p("model", "model=sam2_small model.image_size=256 video.num_frames=4 video.num_objects=1"),
    # objects and predictors
    *[
        _p("objects", f"{_T} model.image_size=256 video.num_frames=8 video.num_objects={k}")
        for k in (5, 8)
    ],
    *[
        _p(
            "objects",
            f"{_T} model.image_size={s} video.num_frames=8 video.num_objects={k} "
            "knobs.predictor=legacy_batched",
        )
        for s, k in ((256, 2), (256, 4), (256, 8), (384, 3))
    ],
    _p(
        "objects",
        f"{_T} model.image_size=256 video.num_frames=12 video.num_objects=3 "
        "knobs.predictor=legacy_batched scenario.reannotate_every=4",
    ),
    # dtype
    *[
        _p(
            "dtype",
            f"{_T} model.image_size={s} video.num_frames=8 video.num_objects={k} "
            f"knobs.dtype=bfloat16 scenario.reannotate_every={e}",
        )
        for s, k, e in ((256, 1, 0), (384, 2, 3), (512, 1, 2))
    ],
    # offload
    *_tiny(
        "offload",
        (
            (256, 24, 2, "knobs.offload_video_to_cpu=true"),
            (512, 8, 1, "knobs.offload_video_to_cpu=true"),
            (256, 24, 2, "knobs.offload_state_to_cpu=true"),
            (384, 12, 1, "knobs.offload_state_to_cpu=true scenario.reannotate_every=3"),
            (256, 12, 3, "knobs.offload_state_to_cpu=true knobs.offload_video_to_cpu=true"),
        ),
    ),
    # bounded-memory strategies and segments
    *_tiny(
        "strategy",
        (
            (256, 40, 2, "knobs.strategy=release"),
            (256, 40, 2, "knobs.strategy=stream"),
            (384, 24, 1, "knobs.strategy=stream"),
            (512, 12, 2, "knobs.strategy=release knobs.offload_video_to_cpu=true"),
            (256, 24, 1, "knobs.strategy=stream scenario.reannotate_every=4"),
            (256, 32, 2, "knobs.segment_frames=12"),
        ),
    ),
]

#: one extrapolation test per axis: the run, and the calibration subset the fit may use
EXTRAPOLATION: list[Point] = [
    _p(
        "extrapolate image_size",
        f"{_T} model.image_size=1024 video.num_frames=4 video.num_objects=2",
        image_size=512,
    ),
    _p(
        "extrapolate image_size",
        f"{_T} model.image_size=1024 video.num_frames=5 "
        "video.num_objects=1 scenario.reannotate_every=2",
        image_size=512,
    ),
    _p(
        "extrapolate cond_frames",
        f"{_T} model.image_size=512 video.num_frames=40 "
        "video.num_objects=1 scenario.reannotate_every=2",
        cond_frames=4,
    ),
    _p(
        "extrapolate cond_frames",
        f"{_T} model.image_size=512 video.num_frames=40 "
        "video.num_objects=1 scenario.reannotate_every=2 knobs.max_cond_frames_in_attn=2",
        cond_frames=4,
    ),
    _p(
        "extrapolate cond_frames",
        f"{_T} model.image_size=256 video.num_frames=60 "
        "video.num_objects=2 scenario.reannotate_every=2",
        cond_frames=4,
    ),
    _p(
        "extrapolate objects",
        f"{_T} model.image_size=384 video.num_frames=8 video.num_objects=8",
        num_objects=3,
    ),
    _p(
        "extrapolate objects",
        f"{_T} model.image_size=256 video.num_frames=8 "
        "video.num_objects=8 knobs.predictor=legacy_batched",
        num_objects=3,
    ),
    _p(
        "extrapolate num_frames",
        f"{_T} model.image_size=256 video.num_frames=200 video.num_objects=1",
        num_frames=48,
    ),
    _p(
        "extrapolate model",
        "model=sam2.1_large model.image_size=512 video.num_frames=4 video.num_objects=2",
        model_excluded=1,
    ),
]

#: the cases a new user tried outside the first model's grid (issue 8's table), re-measured
ISSUE_TABLE: list[Point] = [
    _p("issue table", f"{_T} model.image_size=256 video.num_frames=24 video.num_objects=2"),
    _p(
        "issue table",
        f"{_T} model.image_size=640 video.num_frames=16 video.num_objects=2 "
        "knobs.strategy=release knobs.offload_video_to_cpu=true",
    ),
    _p(
        "issue table",
        f"{_T} model.image_size=256 video.num_frames=10 video.num_objects=6 "
        "knobs.predictor=legacy_batched",
    ),
    _p(
        "issue table",
        f"{_T} model.image_size=256 video.num_frames=10 video.num_objects=2 knobs.dtype=bfloat16",
    ),
    _p(
        "issue table",
        f"{_T} model.image_size=256 video.num_frames=10 video.num_objects=2 "
        "knobs.offload_state_to_cpu=true",
    ),
]

# values the calibration never uses, to keep random points off its grid
_OFF: dict[str, tuple[Any, ...]] = {
    "image_size": (320, 448, 576, 640),
    "num_frames": (5, 7, 10, 14, 18, 30),
    "num_objects": (1, 2, 3, 4, 6),
    "reannotate_every": (0, 0, 3, 5, 6),
    "model": ("sam2.1_tiny", "sam2.1_tiny", "sam2.1_small", "sam2.1_base_plus"),
    "knobs": (
        "",
        "",
        "knobs.offload_video_to_cpu=true",
        "knobs.offload_state_to_cpu=true",
        "knobs.strategy=release",
        "knobs.strategy=stream",
        "knobs.predictor=legacy_batched",
        "knobs.dtype=bfloat16",
        "knobs.max_cond_frames_in_attn=2",
        "knobs.segment_frames=6",
    ),
}


def validation_points(seed: int = 0, n: int = 16) -> list[Point]:
    """``n`` random points off the calibration grid (seeded) + :data:`EXTRAPOLATION`."""
    rng = random.Random(seed)
    out: list[Point] = []
    while len(out) < n:
        s = rng.choice(_OFF["image_size"])
        frames = rng.choice(_OFF["num_frames"])
        model = rng.choice(_OFF["model"])
        if model != "sam2.1_tiny" and s > 448:
            continue  # the large encoders at large sizes are slow on a CPU
        k = rng.choice(_OFF["num_objects"])
        e = rng.choice(_OFF["reannotate_every"])
        knob = rng.choice(_OFF["knobs"])
        if "segment_frames" in knob and frames < 10:
            continue
        if "max_cond" in knob and not e:
            e = 3
        # keep each run within about half a minute on a 2-core CPU: object-frames at 256 px
        # equivalents (bf16 autocast on a CPU without bf16 units is ~10x slower)
        cost = frames * k * (s / 256) ** 2 * (10 if "bfloat16" in knob else 1)
        if cost > 120:
            continue
        over = (
            f"model={model} model.image_size={s} video.num_frames={frames} "
            f"video.num_objects={k} scenario.reannotate_every={e} {knob}"
        )
        out.append(_p("random", over))
    return out + EXTRAPOLATION + ISSUE_TABLE


DESIGNS = ("calibration", "validation")


def design_points(name: str, seed: int = 0) -> list[Point]:
    """The points of design ``name`` (calibration | validation)."""
    if name == "calibration":
        return list(CALIBRATION)
    if name == "validation":
        return validation_points(seed)
    raise ValueError(f"design: unknown design {name!r} (choose from {', '.join(DESIGNS)})")

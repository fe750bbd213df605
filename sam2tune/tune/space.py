"""The knob space a recommendation searches, and what each choice costs in quality and speed.

Quality and speed come from recorded runs where the table has them (median agreement with the
reference and median fps ratio to stock, same image size); otherwise from priors that follow the
escalation the field uses: offload video -> offload state / bounded-memory modes -> fewer
conditioning frames in attention -> lower resolution -> split the video.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pandas as pd

from sam2tune.memory_model.memory import Candidate, Workload

__all__ = [
    "candidates",
    "escalation",
    "Scores",
    "score",
    "image_sizes",
    "impls_of",
    "IMPL_CHOICES",
]

#: what ``impl=`` may say to recommend / tune / lookup
IMPL_CHOICES = ("any", "sam2", "transformers")

#: agreement of another implementation with Meta's sam2 when no run has measured it: not
#: bit-identical (its own kernels and preprocessing), so below the exact 1.0 of Meta's lossless
#: knobs
HF_FIDELITY_PRIOR = 0.99


def impls_of(choice: str) -> tuple[str, ...]:
    """The implementations a recommendation may choose: ``any`` = both (the memory model
    predicts either without the library installed), or just the one named."""
    if choice not in IMPL_CHOICES:
        from sam2tune.errors import InputError

        raise InputError(f"impl: must be one of {', '.join(IMPL_CHOICES)}, got {choice!r}")
    return ("sam2", "transformers") if choice == "any" else (choice,)

#: relative fps vs stock with no data (SAM 2's own figure for offload_state: 27 -> 24 fps)
SPEED_PRIOR = {
    "offload_video": 0.99,
    "offload_state": 0.89,
    "release": 1.0,
    "stream": 0.98,
    "legacy_batched": 1.0,
    "bfloat16": 1.0,
    "segments": 0.97,
}


def image_sizes(s: int) -> list[int]:
    """The workload's resolution and lower ones (multiples of 16, at least 256)."""
    out = []
    for f in (1.0, 0.75, 0.5):
        v = int(round(s * f / 16)) * 16
        if v >= 256 and v not in out:
            out.append(v)
    return out or [s]


def candidates(
    w: Workload, device_kind: str = "cuda", impls: tuple[str, ...] = ("sam2",)
) -> list[Candidate]:
    """Every knob combination worth considering for ``w`` on each implementation in ``impls``
    (transformers: the knobs it maps - offloads, conditioning frames in attention, dtype,
    resolution; Meta-only knobs are not candidates there)."""
    conds = [-1] + [m for m in (2, 4, 8, 16) if m < w.num_cond_frames]
    segs = [0] + [s for s in (1800, 600) if s < w.num_frames]
    dtypes = ["float32", "bfloat16"] if device_kind == "cuda" else ["float32"]
    preds = ["per_object", "legacy_batched"] if w.num_objects > 1 else ["per_object"]
    out: list[Candidate] = []
    if "transformers" in impls and w.model.startswith("sam2.1"):  # it builds SAM 2.1 only
        for ov, os_, m, size, dt in itertools.product(
            (False, True), (False, True), conds, image_sizes(w.image_size), dtypes
        ):
            out.append(
                Candidate(
                    offload_video_to_cpu=ov,
                    offload_state_to_cpu=os_,
                    max_cond_frames_in_attn=m,
                    dtype=dt,
                    image_size=size,
                    impl="transformers",
                )
            )
    if "sam2" not in impls:
        return out
    for ov, os_, strat, m, size, dt, pr, seg in itertools.product(
        (False, True),
        (False, True),
        ("stock", "release", "stream"),
        conds,
        image_sizes(w.image_size),
        dtypes,
        preds,
        segs,
    ):
        if strat == "stream" and ov:
            continue  # stream holds two frames: offloading them changes nothing worth a choice
        out.append(
            Candidate(
                offload_video_to_cpu=ov,
                offload_state_to_cpu=os_,
                max_cond_frames_in_attn=m,
                dtype=dt,
                predictor=pr,
                strategy=strat,
                segment_frames=seg,
                image_size=size,
            )
        )
    return out


def escalation(c: Candidate, w: Workload) -> int:
    """How far down the field's escalation a candidate goes (0 = stock)."""
    level = 0
    if c.offload_video_to_cpu:
        level = 1
    if c.offload_state_to_cpu or c.strategy != "stock":
        level = 2
    if c.max_cond_frames_in_attn != -1 or c.dtype != "float32" or c.predictor != "per_object":
        level = 3
    if (c.image_size or w.image_size) < w.image_size:
        level = 4
    if c.segment_frames:
        level = 5
    return level


@dataclass
class Scores:
    """Expected quality and speed of a candidate, and where each figure comes from."""
    quality: float
    speed: float
    quality_source: str
    speed_source: str


def _setting(c: Candidate) -> str:
    from sam2tune.analysis.table import setting_label

    return setting_label(
        {
            "offload_video_to_cpu": c.offload_video_to_cpu,
            "offload_state_to_cpu": c.offload_state_to_cpu,
            "strategy": c.strategy,
            "segment_frames": c.segment_frames,
            "max_cond_frames_in_attn": c.max_cond_frames_in_attn,
            "dtype": c.dtype,
            "predictor": c.predictor,
            "impl": c.impl,
            "vision_features_cache": c.vision_features_cache,
        }
    )


def score(c: Candidate, w: Workload, data: pd.DataFrame | None = None) -> Scores:
    """Expected agreement with the full-quality run and speed relative to stock."""
    size = c.image_size or w.image_size
    lossless = (
        (c.max_cond_frames_in_attn == -1 or c.max_cond_frames_in_attn >= w.num_cond_frames)
        and c.dtype == "float32"
        and size == w.image_size
        and not c.segment_frames
    )
    hf = c.impl == "transformers"
    q, qs = 1.0, "exact (lossless knobs: bit-identical masks)"
    fidelity, fsrc = 1.0, ""
    if hf:  # another implementation: its agreement with Meta's sam2, measured where recorded
        fidelity, fsrc = HF_FIDELITY_PRIOR, "prior: another implementation, not bit-identical"
        if data is not None and not data.empty and "impl" in data:
            runs = data[
                (data["status"] == "ok")
                & (data["impl"] == "transformers")
                & (data["setting"] == "transformers")
                & data["iou_ref_mean"].notna()
            ]
            if not runs.empty:
                fidelity = float(runs["iou_ref_mean"].median())
                fsrc = f"measured agreement with Meta's sam2 ({len(runs)} transformers runs)"
        q, qs = fidelity, fsrc
    if not lossless:
        q = fidelity
        if c.max_cond_frames_in_attn != -1 and c.max_cond_frames_in_attn < w.num_cond_frames:
            q -= 0.01 * (w.num_cond_frames - c.max_cond_frames_in_attn) / w.num_cond_frames
        if c.dtype == "bfloat16":
            q -= 0.005
        if size < w.image_size:
            q -= 0.1 * (1 - size / w.image_size)
        if c.segment_frames:
            q -= 0.03
        qs = "prior (escalation order; no recorded runs)" + (f"; {fsrc}" if hf else "")
    sp = 1.0
    if c.offload_video_to_cpu:
        sp *= SPEED_PRIOR["offload_video"]
    if c.offload_state_to_cpu:
        sp *= SPEED_PRIOR["offload_state"]
    if c.strategy in ("release", "stream"):
        sp *= SPEED_PRIOR[c.strategy]
    if c.segment_frames:
        sp *= SPEED_PRIOR["segments"]
    sp *= (w.image_size / size) ** 2 if size < w.image_size else 1.0
    ss = "prior"
    if data is not None and not data.empty:
        setting = _setting(c)
        ok = data[(data["status"] == "ok")]
        same = ok[(ok["setting"] == setting) & (ok["image_size"] == size)]
        base = ok[(ok["setting"] == "stock") & (ok["image_size"] == size)]
        real = same[same["weights"] != "random-init"] if "weights" in same else same.iloc[0:0]
        if not lossless and not real.empty and real["iou_gt_mean"].notna().any():
            # real weights: IoU against ground truth, relative to stock's
            base_gt = base[base["weights"] != "random-init"]["iou_gt_mean"].median()
            gt = float(real["iou_gt_mean"].median())
            q = gt / base_gt if base_gt and base_gt == base_gt else gt
            qs = f"measured IoU vs ground truth ({len(real)} runs, relative to stock)"
        elif not lossless and not same.empty and same["iou_ref_mean"].notna().any():
            q = float(same["iou_ref_mean"].median())
            qs = (
                f"measured agreement with the reference ({len(same)} runs; "
                "random-init: not accuracy)"
            )
        if not same.empty and not base.empty and same["fps"].notna().any():
            sp = float(same["fps"].median() / base["fps"].median())
            sp *= (w.image_size / size) ** 2 if size < w.image_size else 1.0
            ss = f"measured ratio to stock ({len(same)} runs)"
    return Scores(q, sp, qs, ss)

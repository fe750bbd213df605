"""The knob space a recommendation searches, and what each choice costs in quality and speed.

Quality and speed come from recorded runs where the table has them (median agreement with the
reference and median fps ratio to stock, same image size); otherwise from priors that follow the
escalation the field uses: offload video -> offload state / bounded-memory modes -> fewer
conditioning frames in attention -> lower resolution -> split the video.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from functools import cache
from typing import Any

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

#: what a lossy knob's quality figure says where no run measured it
NO_QUALITY_MEASUREMENT = (
    "no measurement; run a confirmation with your checkpoint (tune confirm=N with your "
    "annotations); the figure only orders the lossy knobs"
)

#: speed relative to stock where nothing was measured, each with its source (a prior without a
#: source is not a figure)
SPEED_PRIOR: dict[str, tuple[float, str]] = {
    "offload_video": (
        0.99,
        "prior: SAM 2's init_state comment (sam2_video_predictor.py): 'saves the GPU memory "
        "with only a very small overhead'",
    ),
    "offload_state": (
        0.89,
        "prior: SAM 2's init_state comment (sam2_video_predictor.py): fps 27 -> 24 for one "
        "object at 768 px",
    ),
    "release": (1.0, "prior: release frees dict entries between steps, no extra compute"),
    "stream": (
        0.98,
        "prior: stream with frames decoded in the loop ran 0.98x stock's end-to-end time on the "
        "H200 (results/gpu-nvidia-h200/stream_speed.json), taken as no gain",
    ),
    "legacy_batched": (1.0, "prior: SAM 2's batched predictor, unmeasured here"),
    "bfloat16": (1.0, "prior: autocast, unmeasured here"),
    "segments": (0.97, "prior: each segment re-runs init_state and a mask prompt"),
}


@cache
def measured_speed() -> dict[str, dict[str, dict[str, Any]]]:
    """Speed ratios to stock this project measured, by device kind and setting
    (``conf/speed.yaml``: each entry names its record)."""
    import yaml

    from sam2tune.config.store import CONF_DIR

    return yaml.safe_load((CONF_DIR / "speed.yaml").read_text()) or {}


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
    # object batches of the per-object predictor (1 = its own loop; 0 = all of a group)
    obatch = [1] + [b for b in (4, 16) if b < w.num_objects] + [0] if w.num_objects > 1 else [1]
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
    for ov, os_, strat, m, size, dt, pr, seg, ob in itertools.product(
        (False, True),
        (False, True),
        ("stock", "release", "stream"),
        conds,
        image_sizes(w.image_size),
        dtypes,
        preds,
        segs,
        obatch,
    ):
        if strat == "stream" and ov:
            continue  # stream holds two frames: offloading them changes nothing worth a choice
        if ob != 1 and pr != "per_object":
            continue  # the legacy predictor batches every object already
        out.append(
            Candidate(
                offload_video_to_cpu=ov,
                offload_state_to_cpu=os_,
                max_cond_frames_in_attn=m,
                dtype=dt,
                predictor=pr,
                strategy=strat,
                segment_frames=seg,
                object_batch=ob,
                image_size=size,
            )
        )
    return out


def escalation(c: Candidate, w: Workload) -> int:
    """How far down the field's escalation a candidate goes (0 = stock)."""
    level = 0
    if c.offload_video_to_cpu:
        level = 1
    if c.offload_state_to_cpu or c.strategy != "stock" or c.object_batch != 1:
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

    return setting_label(dataclasses.asdict(c))


def score(
    c: Candidate, w: Workload, data: pd.DataFrame | None = None, device_kind: str = "cuda"
) -> Scores:
    """Expected agreement with the full-quality run and speed relative to stock: priors (with
    their sources) unless the recorded runs measured them on this device kind."""
    size = c.image_size or w.image_size
    lossless = (
        (c.max_cond_frames_in_attn == -1 or c.max_cond_frames_in_attn >= w.num_cond_frames)
        and c.dtype == "float32"
        and size == w.image_size
        and not c.segment_frames
        # the legacy predictor is another code path (objects batched, every prompted frame a
        # conditioning frame of every object): never compared with the per-object one here
        and c.predictor == "per_object"
    )
    q, qs = _quality_prior(c, w, data, size, lossless)
    sp, ss = _modelled_speed(c, w, device_kind) or _speed_prior(c, w, size, device_kind)
    if data is not None and not data.empty:
        return _measured_scores(c, w, data, size, lossless, device_kind, Scores(q, sp, qs, ss))
    return Scores(q, sp, qs, ss)


def _hf_fidelity(data: pd.DataFrame | None) -> tuple[float, str]:
    """transformers' agreement with Meta's sam2: measured where recorded, else the prior."""
    if data is not None and not data.empty and "impl" in data:
        runs = data[
            (data["status"] == "ok")
            & (data["impl"] == "transformers")
            & (data["setting"] == "transformers")
            & data["iou_ref_mean"].notna()
        ]
        if not runs.empty:
            n = len(runs)
            return float(runs["iou_ref_mean"].median()), (
                f"measured agreement with Meta's sam2 ({n} transformers runs)"
            )
    return HF_FIDELITY_PRIOR, "prior: another implementation, not bit-identical"


def _quality_prior(
    c: Candidate, w: Workload, data: pd.DataFrame | None, size: int, lossless: bool
) -> tuple[float, str]:
    hf = c.impl == "transformers"
    q, qs = 1.0, "exact (lossless knobs: bit-identical masks)"
    if c.object_batch != 1:
        qs = (
            "the per-object loop's masks to float32 rounding (object batches: logits within "
            "1e-5; a pixel differs only where its logit is that close to 0; "
            "tests/test_object_batch.py, experiments/bench_object_batch.py)"
        )
    fidelity, fsrc = _hf_fidelity(data) if hf else (1.0, "")
    if hf:
        q, qs = fidelity, fsrc
    if lossless:
        return q, qs
    q = fidelity
    if c.max_cond_frames_in_attn != -1 and c.max_cond_frames_in_attn < w.num_cond_frames:
        q -= 0.01 * (w.num_cond_frames - c.max_cond_frames_in_attn) / w.num_cond_frames
    if c.dtype == "bfloat16":
        q -= 0.005
    if size < w.image_size:
        q -= 0.1 * (1 - size / w.image_size)
    if c.segment_frames:
        q -= 0.03
    if c.predictor != "per_object":
        q -= 0.005
    # these decrements only order the lossy knobs (the field's escalation); no run measured
    # them, and the SAM 2 paper's ablations retrain a model per setting, so they are not the
    # cost of changing a knob on a trained checkpoint
    return q, NO_QUALITY_MEASUREMENT + (f"; {fsrc}" if hf else "")


def _knob_ratios(
    c: Candidate, device_kind: str, keys: tuple[str, ...]
) -> tuple[float, list[str]]:
    """The product of the speed ratios to stock of ``c``'s knobs among ``keys`` (measured on this
    device kind where conf/speed.yaml has them, else the sourced priors), and their sources."""
    on = {
        "offload_video": c.offload_video_to_cpu,
        "offload_state": c.offload_state_to_cpu,
        "release": c.strategy == "release",
        "stream": c.strategy == "stream",
        "segments": bool(c.segment_frames),
    }
    sp, srcs = 1.0, []
    for key in keys:
        if not on[key]:
            continue
        if device_kind == "cpu" and key in ("offload_video", "offload_state"):
            srcs.append(f"{key} 1.00x (on the CPU the device is the host: nothing is moved)")
            continue
        m = measured_speed().get(device_kind, {}).get(key)
        if m:
            ratio, src = m["ratio"], f"measured: {m['source']}; {m['record']}"
        else:
            ratio, src = SPEED_PRIOR[key]
        sp *= float(ratio)
        srcs.append(f"{key} {float(ratio):.2f}x ({src})")
    return sp, srcs


def _speed_prior(c: Candidate, w: Workload, size: int, device_kind: str) -> tuple[float, str]:
    sp, srcs = _knob_ratios(c, device_kind, tuple(KNOB_SPEED_KEYS))
    sp *= (w.image_size / size) ** 2 if size < w.image_size else 1.0
    return sp, "; ".join(srcs) if srcs else "stock"


#: the knobs whose speed the ratios describe (the speed model covers resolution, dtype,
#: predictor, objects, memory read and loading; these it does not: transfers and re-inits)
KNOB_SPEED_KEYS = ("offload_video", "offload_state", "release", "stream", "segments")
_NOT_IN_SPEED_MODEL = ("offload_video", "offload_state", "segments")


@cache
def _speed_model() -> Any:
    from sam2tune.speed_model.model import load_speed_model

    return load_speed_model()


def end_to_end_s(c: Candidate, w: Workload, device_kind: str) -> float | None:
    """Predicted end-to-end time of ``c`` on ``w`` (the speed model, with the knobs it does not
    model applied as their ratios); None where the speed model has no calibration for the
    device kind, or for transformers (never fitted)."""
    from sam2tune.speed_model.model import predict_speed

    if c.impl != "sam2":
        return None
    p = predict_speed(w, c, _speed_model(), device_kind)
    if p is None or p.end_to_end_s <= 0:
        return None
    return p.end_to_end_s / _knob_ratios(c, device_kind, _NOT_IN_SPEED_MODEL)[0]


def answer_speed(
    w: Workload, c: Candidate, device_kind: str, gpu: str | None = None, model: Any = None
) -> tuple[Any, str, str]:
    """The speed figure an answer prints (prediction, text, provenance): the speed model's
    (``model``: the shipped one, on the CPU scaled to this machine), with the knobs it does not
    model applied as the ratios the ranking uses (:func:`end_to_end_s`)."""
    from sam2tune.speed_model.local import speed_answer

    return speed_answer(w, c, device_kind, gpu, model,
                        knobs=_knob_ratios(c, device_kind, _NOT_IN_SPEED_MODEL))


def _modelled_speed(c: Candidate, w: Workload, device_kind: str) -> tuple[float, str] | None:
    """Speed relative to stock as stock's predicted end-to-end time / the candidate's."""
    t, t0 = end_to_end_s(c, w, device_kind), end_to_end_s(Candidate(), w, device_kind)
    if t is None or t0 is None:
        return None
    _, srcs = _knob_ratios(c, device_kind, _NOT_IN_SPEED_MODEL)
    cal = _speed_model().calibration.get(device_kind, {})
    src = (
        f"predicted end-to-end {t:.1f} s vs stock's {t0:.1f} s (speed model, "
        f"{device_kind} fitted on {', '.join(cal.get('devices', [])) or '?'})"
    )
    return t0 / t, "; ".join([src, *srcs])


def _measured_scores(
    c: Candidate, w: Workload, data: pd.DataFrame, size: int, lossless: bool, device_kind: str,
    prior: Scores,
) -> Scores:
    """The prior's figures replaced by what the recorded runs on this device kind measured."""
    q, sp, qs, ss = prior.quality, prior.speed, prior.quality_source, prior.speed_source
    setting = _setting(c)
    ok = data[(data["status"] == "ok")]
    if "device" in ok:  # speed and quality measured on the device kind asked about
        ok = ok[ok["device"].astype(str).str.startswith(device_kind)]
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
        ss = f"measured fps ratio to stock ({len(same)} {device_kind} runs in the results)"
    return Scores(q, sp, qs, ss)

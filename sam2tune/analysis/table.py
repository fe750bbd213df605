"""Derived columns shared by plots, conclusions and reports."""

from __future__ import annotations

import pandas as pd

__all__ = ["prepare", "setting_label", "DEVICE_PEAK"]

#: the accelerator peak used in figures: CUDA's measured figure where there is one, else the
#: estimate (the column ``device_peak_kind`` says which)
DEVICE_PEAK = "device_peak_bytes"


def setting_label(r) -> str:
    """Short name of a row's non-default knobs, e.g. ``offload_video+state`` or ``stream``."""
    parts = []
    if r.get("impl") == "transformers":
        parts.append("transformers")
    if r.get("offload_video_to_cpu") is True and r.get("offload_state_to_cpu") is True:
        parts.append("offload_video+state")
    elif r.get("offload_video_to_cpu") is True:
        parts.append("offload_video")
    elif r.get("offload_state_to_cpu") is True:
        parts.append("offload_state")
    if r.get("strategy") not in (None, "stock"):
        parts.append(str(r["strategy"]))
    if r.get("segment_frames"):
        parts.append(f"segments={int(r['segment_frames'])}")
    m = r.get("max_cond_frames_in_attn")
    if m is not None and m == m and int(m) != -1:
        parts.append(f"max_cond={int(m)}")
    if r.get("dtype") == "bfloat16":
        parts.append("bf16")
    if r.get("predictor") == "legacy_batched":
        parts.append("legacy_batched")
    if r.get("async_loading_frames") is True:
        parts.append("async")
    ob = r.get("object_batch")
    if ob is not None and ob == ob and int(ob) != 1:
        parts.append(f"object_batch={'all' if int(ob) == 0 else int(ob)}")
    v = r.get("vision_features_cache")
    if v is not None and v == v and int(v) != 1:
        parts.append(f"vision_cache={int(v)}")
    return "+".join(parts) or "stock"


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``setting``, ``device_peak_bytes`` and ``device_peak_kind``; keep every row."""
    out = df.copy()
    if out.empty:
        for c in ("setting", DEVICE_PEAK, "device_peak_kind"):
            out[c] = pd.Series(dtype=object)
        return out
    out["setting"] = [setting_label(r) for r in out.to_dict("records")]
    cuda = pd.to_numeric(out["cuda_max_allocated_bytes"], errors="coerce")
    est = pd.to_numeric(out["est_device_peak_bytes"], errors="coerce")
    out[DEVICE_PEAK] = cuda.where(cuda.notna(), est)
    out["device_peak_kind"] = ["measured (CUDA)" if c == c else "estimated" for c in cuda]
    for c in ("num_frames", "num_objects", "image_size", "num_cond_frames"):
        out[c] = pd.to_numeric(out[c], errors="coerce")
    return out

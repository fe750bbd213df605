"""Conclusions computed from the results table (never typed by hand).

Each function returns sentences with their numbers and provenance; ``all_conclusions`` runs every
one that the data supports.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from sam2tune.analysis.table import DEVICE_PEAK, prepare
from sam2tune.units import MiB, fmt_bytes

__all__ = [
    "all_conclusions",
    "frame_slopes",
    "cond_frame_cost",
    "implementation_conclusions",
    "LOSSLESS",
]

LOSSLESS = {
    "offload_video",
    "offload_state",
    "offload_video+state",
    "release",
    "stream",
    "offload_video+release",
    "offload_video+stream",
    "async",
}


def _kind(g: pd.DataFrame) -> str:
    kinds = set(g["device_peak_kind"])
    return "measured, CUDA" if kinds == {"measured (CUDA)"} else "estimated"


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"]


def status_counts(df: pd.DataFrame) -> list[str]:
    """How many runs were recorded, by status."""
    c = df["status"].value_counts().to_dict()
    parts = ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
    return [f"{len(df)} runs recorded: {parts}."]


#: distinct video lengths a measured (noisy) host-RSS slope needs before it is stated
MIN_HOST_LENGTHS = 3



def _slope(x: pd.Series, y: pd.Series) -> float:
    """Least-squares bytes per unit of ``x``; below 0.5 B (integer bytes: floating-point noise
    of a flat series) it is 0."""
    s = float(np.polyfit(x.astype(float), y.astype(float), 1)[0])
    return 0.0 if abs(s) < 0.5 else s

def frame_slopes(df: pd.DataFrame) -> pd.DataFrame:
    """Least-squares slope of the device peak vs frames per (image_size, objects, setting)."""
    rows = []
    for (size, k, setting), g in _ok(df).groupby(["image_size", "num_objects", "setting"]):
        if g["num_frames"].nunique() < 2:
            continue
        slope = _slope(g["num_frames"], g[DEVICE_PEAK])
        # host RSS is measured and noisy: a slope from fewer than 3 lengths is not a finding
        host = (
            _slope(g["num_frames"], g["peak_host_rss_bytes"])
            if g["num_frames"].nunique() >= MIN_HOST_LENGTHS
            else None
        )
        rows.append(
            dict(
                image_size=int(size),
                num_objects=int(k),
                setting=setting,
                bytes_per_frame=float(slope),
                host_bytes_per_frame=None if host is None else float(host),
                lengths=int(g["num_frames"].nunique()),
                kind=_kind(g),
                n=len(g),
            )
        )
    return pd.DataFrame(rows)


def length_conclusions(df: pd.DataFrame) -> list[str]:
    """Memory per 100 frames for each setting, and what each setting saves against stock."""
    sl = frame_slopes(df)
    out = []
    for r in sl.itertuples():
        out.append(
            f"At image_size {r.image_size} with {r.num_objects} objects, {r.setting} grows the "
            f"accelerator peak by {r.bytes_per_frame * 100 / MiB:.1f} MiB per 100 frames "
            f"({r.bytes_per_frame:,.0f} B/frame, {r.kind}; host RSS "
            + (
                f"{r.host_bytes_per_frame * 100 / MiB:.1f} MiB per 100 frames, measured"
                if (
                    r.host_bytes_per_frame is not None
                    and r.host_bytes_per_frame == r.host_bytes_per_frame
                )
                else f"slope: not enough data ({r.lengths} lengths; it needs {MIN_HOST_LENGTHS})"
            )
            + f"; {r.n} runs)."
        )
    for (size, k), g in sl.groupby(["image_size", "num_objects"]) if not sl.empty else []:
        base = g[g["setting"] == "stock"]
        if base.empty:
            continue
        b = base.iloc[0].bytes_per_frame
        for r in g[g["setting"] != "stock"].itertuples():
            saved = b - r.bytes_per_frame
            out.append(
                f"{r.setting} removed {saved * 100 / MiB:.1f} MiB of accelerator memory per 100 "
                f"frames at image_size {size} ({k} objects) compared with stock"
                + (f" ({b / r.bytes_per_frame:.0f}x flatter)." if r.bytes_per_frame > 0 else ".")
            )
    return out


def lossless_conclusions(df: pd.DataFrame) -> list[str]:
    """Whether the lossless settings reproduced the reference masks exactly."""
    ok = _ok(df)
    out = []
    for s, g in ok.groupby("setting"):
        if s in LOSSLESS and g["iou_ref_mean"].notna().any():
            lo = g["iou_ref_mean"].min()
            verdict = "identical masks" if lo == 1.0 else "NOT identical"
            out.append(
                f"{s}: agreement with the reference {lo:.4f} over {len(g)} runs ({verdict})."
            )
    return out


def cond_frame_cost(df: pd.DataFrame) -> pd.DataFrame:
    """Device peak vs conditioning frames attended (num_cond capped by max_cond_frames_in_attn)."""
    ok = _ok(df).copy()
    ok = ok[ok["num_cond_frames"] > 0]
    if ok.empty:
        return ok
    cap = ok["max_cond_frames_in_attn"].astype(int)
    ok["attended_cond_frames"] = np.where(
        cap == -1, ok["num_cond_frames"], np.minimum(ok["num_cond_frames"], cap)
    )
    return ok


def cond_conclusions(df: pd.DataFrame) -> list[str]:
    """What each conditioning frame in attention costs, and the agreement capping them keeps."""
    ok = cond_frame_cost(df)
    out: list[str] = []
    if ok.empty:
        return out
    for (size, k, n, every), g in ok.groupby(
        ["image_size", "num_objects", "num_frames", "reannotate_every"]
    ):
        if g["attended_cond_frames"].nunique() < 2 or every == 0:
            continue
        x = g["attended_cond_frames"].astype(float)
        act = np.polyfit(x, g["activation_peak_bytes"].astype(float), 1)[0]
        peak = np.polyfit(x, g[DEVICE_PEAK].astype(float), 1)[0]
        lo = g.loc[g["attended_cond_frames"].idxmin()]
        out.append(
            f"With {int(g['num_cond_frames'].max())} prompted frames ({int(n)} frames, {int(k)} "
            f"objects, image_size {int(size)}), each extra conditioning frame in attention cost "
            f"{peak / MiB:.2f} MiB of accelerator peak ({_kind(g)}; step activations "
            f"{act / MiB:.2f} MiB, measured); attending {int(lo['attended_cond_frames'])} of them "
            f"kept agreement {lo['iou_ref_mean']:.3f} with the all-frames reference."
        )
    return out


def object_conclusions(df: pd.DataFrame) -> list[str]:
    """What each extra object costs in accelerator memory and fps, per predictor."""
    out = []
    ok = _ok(df)
    for (size, pred), g in ok.groupby(["image_size", "predictor"]):
        g = g[g["setting"].isin(["stock", "legacy_batched"])]
        if g["num_objects"].nunique() < 2:
            continue
        x = g["num_objects"].astype(float)
        per_obj = np.polyfit(x, g[DEVICE_PEAK].astype(float), 1)[0]
        fps = g.groupby("num_objects")["fps"].median()
        out.append(
            f"{pred} predictor at image_size {int(size)}: each extra object cost "
            f"{per_obj / MiB:.1f} MiB of accelerator peak ({_kind(g)}); "
            f"fps {fps.iloc[0]:.2f} with {int(fps.index[0])} object(s) -> "
            f"{fps.iloc[-1]:.2f} with {int(fps.index[-1])} (measured)."
        )
    return out


def resolution_conclusions(df: pd.DataFrame) -> list[str]:
    """Accelerator peak, fps and agreement by image size (stock runs)."""
    ok = _ok(df)
    ok = ok[ok["setting"] == "stock"]
    if ok["image_size"].nunique() < 2:
        return []
    g = ok.groupby("image_size").agg(
        peak=(DEVICE_PEAK, "median"), fps=("fps", "median"), agree=("iou_ref_mean", "median")
    )
    cells = [
        f"{int(s)} px: {r.peak / MiB:.0f} MiB, {r.fps:.2f} fps, agreement {r.agree:.3f}"
        for s, r in g.iterrows()
    ]
    return [
        "Resolution (stock; accelerator peak, fps, agreement with the reference): "
        + "; ".join(cells)
        + "."
    ]


_ALL: list[Callable[[pd.DataFrame], list[str]]] = [
    status_counts,
    length_conclusions,
    lossless_conclusions,
    cond_conclusions,
    object_conclusions,
    resolution_conclusions,
]


def _base_setting(impl: str) -> str:
    return "transformers" if impl == "transformers" else "stock"


def implementation_conclusions(df: pd.DataFrame) -> list[str]:
    """Meta's sam2 vs transformers on the same workloads: memory by role, speed, agreement
    with Meta's sam2 (implementation fidelity), growth per frame, and what each
    implementation's options save and cost against its own no-knob run."""
    d = prepare(df) if "setting" not in df else df
    ok = _ok(d)
    if "impl" not in ok or ok["impl"].nunique() < 2:
        return []
    out: list[str] = []
    key = ["num_frames", "num_objects", "image_size", "num_cond_frames"]
    base = ok[ok["setting"] == ok["impl"].map(_base_setting)]
    for (n, k, size, cond), g in base.groupby(key):
        s, t = g[g["impl"] == "sam2"], g[g["impl"] == "transformers"]
        if s.empty or t.empty:
            continue
        a, b = s.iloc[0], t.iloc[0]
        obj_frames = max(int(k) * int(n), 1)
        out.append(
            f"{int(n)} frames, {int(k)} objects, {int(cond)} conditioning frames at {int(size)} "
            f"px, no knobs: device peak sam2 {fmt_bytes(a[DEVICE_PEAK])} vs transformers "
            f"{fmt_bytes(b[DEVICE_PEAK])} ({b[DEVICE_PEAK] / a[DEVICE_PEAK]:.2f}x, "
            f"{_kind(g)}); inference state {fmt_bytes(a['state_bytes'])} vs "
            f"{fmt_bytes(b['state_bytes'])} (about {a['state_bytes'] / obj_frames / 1024:.0f} vs "
            f"{b['state_bytes'] / obj_frames / 1024:.0f} KiB per object-frame, census); host RSS "
            f"peak {fmt_bytes(a['peak_host_rss_bytes'])} vs {fmt_bytes(b['peak_host_rss_bytes'])} "
            f"(measured); {a['fps']:.2f} vs {b['fps']:.2f} fps (measured, {a['device']}); "
            f"transformers' masks agree with Meta's sam2 at IoU {b['iou_ref_mean']:.3f}, J&F "
            f"{b['jf_ref_mean']:.3f} (same weights: implementation fidelity)."
        )
    sl = frame_slopes(d)
    if not sl.empty:
        for r in sl[sl["setting"].isin(["stock", "transformers"])].itertuples():
            impl = "transformers" if r.setting == "transformers" else "sam2"
            out.append(
                f"{impl}, no knobs, {r.num_objects} objects at {r.image_size} px: the device "
                f"peak grows {r.bytes_per_frame * 100 / MiB:.1f} MiB per 100 frames "
                f"({r.bytes_per_frame:,.0f} B/frame over {r.lengths} lengths, {r.kind})."
            )
    for (impl, n, k, size, cond), g in ok.groupby(["impl", *key]):
        b0 = g[g["setting"] == _base_setting(impl)]
        if b0.empty:
            continue
        ref = b0.iloc[0]
        for r in g[g["setting"] != _base_setting(impl)].itertuples():
            dev = ref[DEVICE_PEAK] - getattr(r, DEVICE_PEAK)
            host = r.peak_host_rss_bytes - ref["peak_host_rss_bytes"]
            out.append(
                f"{impl} {r.setting} ({int(n)} frames, {int(k)} objects, {int(cond)} "
                f"conditioning frames, {int(size)} px): "
                + (f"saves {fmt_bytes(dev)}" if dev >= 0 else f"costs {fmt_bytes(-dev)}")
                + f" of device memory against {impl} with no knobs, host RSS "
                + (f"+{fmt_bytes(host)}" if host >= 0 else f"-{fmt_bytes(-host)}")
                + f", {r.fps / ref['fps']:.2f}x its fps, agreement with Meta's sam2 "
                f"IoU {r.iou_ref_mean:.3f}."
            )
    return out


def all_conclusions(df: pd.DataFrame) -> list[str]:
    """Every conclusion the results table supports (one that fails to compute says so)."""
    df = prepare(df) if "setting" not in df else df
    out: list[str] = []
    for fn in _ALL:
        try:
            out += fn(df)
        except Exception as e:  # one unsupported analysis must not sink the report
            out.append(f"({fn.__name__} could not be computed: {type(e).__name__}: {e})")
    if (df["weights"] == "random-init").any():
        out.append(
            "Weights are random-init: agreement figures compare runs with each other; "
            "no figure here measures segmentation accuracy."
        )
    return out

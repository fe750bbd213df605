"""What a study's settings would need on a real video: the memory model's prediction (labelled
predicted, never measured) of each setting's peak GPU memory at 1024 px over 1-2 minute videos,
beside the usable memory of common GPUs.

The model's per-frame terms are SAM 2's exact tensor sizes (the slopes the runs measure) and its
coefficients are fitted on measured runs (``conf/memory_model.json``, CUDA coefficients where a
GPU calibration was recorded)."""

from __future__ import annotations

import pandas as pd

from sam2tune.memory_model.memory import Candidate, MemoryModel, Workload, predict
from sam2tune.units import GiB

__all__ = ["PROJECTION_GPUS", "FPS", "project", "projection_conclusions"]

#: catalog GPUs drawn beside the projection (names in conf/gpus.yaml)
PROJECTION_GPUS = ("RTX 4060", "RTX 3060", "RTX 4080", "RTX 4090", "A100 40GB", "A100 80GB")
FPS = 30  # frames per second of the projected videos
SIZE = 1024  # SAM 2's own input resolution
SECONDS = (15, 30, 45, 60, 75, 90, 105, 120)


def project(df: pd.DataFrame, model: MemoryModel | None = None) -> pd.DataFrame:
    """Predicted peak GPU memory per setting of ``df`` (its successful runs) at 1024 px, 30 fps,
    for videos of 15 s to 2 min, with the study's largest object count (all prompted on the
    first frame). Columns: setting, seconds, num_frames, num_objects, device_peak_bytes,
    coefficients (where they were fitted)."""
    model = model or MemoryModel.load()
    _, source = model.kind("cuda")
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame()
    k = int(ok["num_objects"].max())
    rows = []
    for setting, g in ok.groupby("setting", sort=True):
        r = g.iloc[0]
        c = Candidate.from_knobs(r.to_dict(), image_size=SIZE)
        for s in SECONDS:
            w = Workload(
                model=str(r["model"]),
                image_size=SIZE,
                num_frames=s * FPS,
                num_objects=k,
                weights_bytes=int(r["weights_bytes"]),
            )
            p = predict(w, c, model, "cuda", host_baseline=0, host_resident=0)
            rows.append(
                dict(
                    setting=setting,
                    seconds=s,
                    num_frames=s * FPS,
                    num_objects=k,
                    device_peak_bytes=int(p.device_peak_bytes),
                    coefficients=source,
                )
            )
    return pd.DataFrame(rows)


def gpu_lines(model: MemoryModel | None = None) -> list[tuple[str, int, int]]:
    """(name, vendor bytes, usable bytes) of :data:`PROJECTION_GPUS`."""
    from sam2tune.gpus import catalog, usable_memory

    model = model or MemoryModel.load()
    cat = catalog()
    return [(n, cat[n], usable_memory(cat[n], model)[0]) for n in PROJECTION_GPUS if n in cat]


def projection_conclusions(df: pd.DataFrame) -> list[str]:
    """One sentence per setting: its predicted 1- and 2-minute peaks at 1024 px and the smallest
    catalog GPU each fits."""
    model = MemoryModel.load()
    p = project(df, model)
    if p.empty:
        return []
    from sam2tune.gpus import catalog, usable_memory

    gpus = sorted((usable_memory(b, model)[0], n) for n, b in catalog().items())
    out = []
    for setting, g in p.groupby("setting", sort=True):
        parts = []
        for s in (60, 120):
            need = int(g[g["seconds"] == s]["device_peak_bytes"].iloc[0])
            fit = next((n for u, n in gpus if u >= need), None)
            parts.append(
                f"{s // 60} min: {need / GiB:.1f} GiB ("
                + (f"smallest catalog GPU it fits: {fit}" if fit else "fits no catalog GPU")
                + ")"
            )
        out.append(
            f"Predicted (memory model, {g['coefficients'].iloc[0]} coefficients; not measured) at "
            f"{SIZE} px, {FPS} fps, {int(g['num_objects'].iloc[0])} objects, {setting}: "
            + "; ".join(parts)
            + "."
        )
    return out

"""Where a prediction can be trusted: each axis of the workload against the calibration region
(exact axes extrapolate freely; fitted ones warn by how far), and architecture twins."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sam2tune.memory_model.reads import _arch, memory_read
from sam2tune.memory_model.workload import Candidate, Workload

if TYPE_CHECKING:
    pass

EXACT_AXES = {
    "num_frames": "frames scale exact terms only (frame cache, state per object-frame)",
    "memory_frames": "memory tokens cost exact per-token bytes (SAM 2's attention code)",
}


def workload_axes(w: Workload, c: Candidate, read: dict[str, int] | None = None) -> dict[str, Any]:
    """A (workload, knobs) pair as the trust region's axes."""
    r = read or memory_read(w, c)
    return {
        "image_size": c.image_size or w.image_size,
        "num_frames": w.num_frames,
        "num_objects": w.num_objects,
        "memory_frames": r["frames"],
        "model": w.model,
        "impl": c.impl,
        "predictor": c.predictor,
        "dtype": c.dtype,
        "strategy": c.strategy + ("+segments" if c.segment_frames else ""),
        "offload_video_to_cpu": c.offload_video_to_cpu,
        "offload_state_to_cpu": c.offload_state_to_cpu,
    }


def trust_region(
    w: Workload, c: Candidate, calibration: dict[str, Any], read: dict[str, int] | None = None
) -> dict[str, Any]:
    """Whether the workload lies inside what the model was calibrated on, axis by axis.

    Returns:
        ``{"inside": bool, "axes": {axis: {"value", "calibrated", "status", "factor"?}},
        "statement": one line}``; numeric axes outside say how far ("image_size 1024: 2.0x the
        largest calibrated").
    """
    region = calibration.get("region")
    if not region:
        return {"inside": False, "axes": {}, "statement": "no calibration region recorded"}
    axes: dict[str, Any] = {}
    notes, exact = [], []
    for name, v in workload_axes(w, c, read).items():
        cal = region.get(name)
        if cal is None and name == "impl":  # fitted before impl= existed: Meta's sam2 only
            cal = ["sam2"]
        if cal is None:
            continue
        ax, note = _axis(name, v, cal)
        axes[name] = ax
        if ax.get("via"):
            exact.append(f"model {v} shares {ax['via']}'s architecture (calibrated)")
        if note and name in EXACT_AXES:
            ax["exact"] = True
            exact.append(f"{note} ({EXACT_AXES[name]})")
        elif note:
            notes.append(note)
    joint = _joint_note(w, c, axes, region.get("joint"), read)
    if joint:
        notes.append(joint)
    inside = not notes
    head = (
        "inside the calibrated region for every fitted term"
        if inside
        else "fitted terms extrapolated: " + "; ".join(notes)
    )
    if exact:
        head += "; not a concern: " + "; ".join(exact)
    return {"inside": inside, "axes": axes, "statement": head, "exact_extrapolations": exact}


def _joint_note(
    w: Workload, c: Candidate, axes: dict[str, Any], joint: Any, read: Any
) -> str | None:
    """A note when no calibrated run of the workload's model (or its architecture twin) had at
    least its image size and object count together, each axis being inside on its own."""
    if not joint or axes.get("model", {}).get("status") != "inside":
        return None  # no joint record, or a model never calibrated (said on its own)
    v = workload_axes(w, c, read)
    model = axes["model"].get("via") or v["model"]
    mine = [(int(s), int(k)) for m, s, k in joint if m == model]
    # an axis beyond its range is said on its own; jointly it counts at the range's edge (9
    # objects at 1024 px with large is still large at 1024 px, never calibrated)
    size, objects = (min(v[a], axes[a]["calibrated"][1]) if a in axes else v[a]
                     for a in ("image_size", "num_objects"))
    if not mine or any(s >= size and k >= objects for s, k in mine):
        return None
    front = sorted({(s, k) for s, k in mine
                    if not any(s2 >= s and k2 >= k and (s2, k2) != (s, k) for s2, k2 in mine)})
    seen = ", ".join(f"{s} px x {k} object{'s' if k > 1 else ''}" for s, k in front)
    n = v["num_objects"]
    return (f"{v['model']} at {v['image_size']} px x {n} object{'s' if n > 1 else ''}: never "
            f"calibrated together (the largest calibrated with {model}: {seen})")


def _axis(name: str, v: Any, cal: Any) -> tuple[dict[str, Any], str | None]:
    """One axis against its calibrated range or set: its entry and a note when outside."""
    if isinstance(cal, dict):  # numeric range
        lo, hi = cal["min"], cal["max"]
        if v > hi:
            f = v / hi if hi else math.inf
            ax = {"value": v, "calibrated": [lo, hi], "status": "above", "factor": f}
            return ax, f"{name} {v}: {f:.1f}x the largest calibrated ({hi})"
        if v < lo:
            f = lo / v if v else math.inf
            ax = {"value": v, "calibrated": [lo, hi], "status": "below", "factor": f}
            return ax, f"{name} {v}: below the smallest calibrated ({lo})"
        return {"value": v, "calibrated": [lo, hi], "status": "inside"}, None
    if v in cal:
        return {"value": v, "calibrated": cal, "status": "inside"}, None
    if name == "model":
        twin = _same_architecture(str(v), [str(m) for m in cal])
        if twin is not None:
            ax = {"value": v, "calibrated": cal, "status": "inside", "via": twin}
            return ax, None
    seen = ", ".join(map(str, cal))
    return {"value": v, "calibrated": cal, "status": "unseen"}, (
        f"{name} {v}: never calibrated (seen: {seen})"
    )


def _same_architecture(model: str, calibrated: list[str]) -> str | None:
    """A calibrated model whose sizes the fitted terms read are the same (``sam2_tiny`` and
    ``sam2.1_tiny``: same Hiera trunk width, memory frames, pointers and widths), if any."""
    try:
        mine = _arch(model)
    except Exception:
        return None
    size = model.split("_", 1)[-1]
    same = [m for m in calibrated if _arch(m) == mine]
    same.sort(key=lambda m: m.split("_", 1)[-1] != size)  # the same size name first
    return same[0] if same else None

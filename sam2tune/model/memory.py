"""Peak accelerator and host memory of a SAM 2 video run, term by term.

Exact where SAM 2's code fixes a size (S = image_size, N = frames, K = objects):

* frame cache: ``3 x S^2 x 4`` B per loaded frame (all N for stock/release, the window for
  stream, the segment for segments); on the host with ``offload_video_to_cpu``;
* per object-frame state: ``maskmem_features`` ``64 x (S/16)^2 x 2`` B (bf16) + ``pred_masks``
  ``(S/4)^2 x 4`` B + object pointer and score ``256 x 4 + 4`` B, for every tracked object-frame
  (stock) or only for the frames forward propagation still reads plus the conditioning frames
  (release / stream; their low-res masks are dropped once yielded); maskmem and masks on the host
  with ``offload_state_to_cpu``; plus one ``maskmem_pos_enc`` ``64 x (S/16)^2 x 4`` B;
* weights: parameters + buffers (the model preset's ``weights_bytes``).

Fitted from recorded runs (per device kind, least squares, with the run ids they came from):

* cached features ``c_feat x S^2``;
* one step's activation peak ``S^2 x (a_img + a_obj x B) + a_mem x B x (S/16)^2 x M``, where
  B = objects per step (1 per-object, K legacy batched) and M = memory frames attended
  (conditioning frames attended + num_maskmem - 1);
* host baseline (process, runtime and libraries) and, on the CPU, the host share of the rest.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Workload", "Candidate", "MemoryModel", "predict", "TERMS", "DEFAULT_MODEL_PATH"]

NUM_MASKMEM = 7
MAX_OBJ_PTRS = 16
MEM_DIM = 64
STREAM_WINDOW = 2
#: non-conditioning frames forward propagation still reads (release / stream keep these)
READ_WINDOW = max(MAX_OBJ_PTRS - 1, 1 + (NUM_MASKMEM - 2)) + 1
TERMS = ("weights", "frames", "state", "cached_features", "activations", "bank_copy")
DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[2] / "conf" / "memory_model.json"


@dataclass
class Workload:
    """What the user has: model, resolution, video length, objects, prompted frames."""

    model: str = "sam2.1_tiny"
    image_size: int = 1024
    num_frames: int = 300
    num_objects: int = 1
    # distinct prompted (conditioning) frames
    num_cond_frames: int = 1
    # object-frames actually tracked (objects entering late track fewer); None = K x N
    object_frames: int | None = None
    weights_bytes: int = 0

    def __post_init__(self) -> None:
        for name in ("image_size", "num_frames", "num_objects", "num_cond_frames"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"workload.{name}: must be a positive integer, got {v!r}")
        if self.image_size % 16:
            raise ValueError(
                f"workload.image_size: must be a multiple of 16, got {self.image_size}"
            )


@dataclass(frozen=True)
class Candidate:
    """The knobs a recommendation chooses."""

    offload_video_to_cpu: bool = False
    offload_state_to_cpu: bool = False
    max_cond_frames_in_attn: int = -1
    dtype: str = "float32"
    predictor: str = "per_object"
    strategy: str = "stock"
    segment_frames: int = 0
    image_size: int | None = None  # None = the workload's

    def overrides(self, w: Workload) -> list[str]:
        """The equivalent ``sam2tune run`` overrides."""
        out = [f"model={w.model}", f"model.image_size={self.image_size or w.image_size}"]
        for f in dataclasses.fields(self):
            if f.name == "image_size":
                continue
            v = getattr(self, f.name)
            if v != f.default:
                out.append(f"knobs.{f.name}={str(v).lower() if isinstance(v, bool) else v}")
        return out


@dataclass
class MemoryModel:
    """Fitted coefficients per device kind (``cpu`` / ``cuda``) with their provenance."""

    coeffs: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)

    def kind(self, device_kind: str) -> tuple[dict[str, float], str]:
        """Coefficients for ``device_kind`` and where they came from (falls back to cpu)."""
        if device_kind in self.coeffs:
            return self.coeffs[device_kind], device_kind
        if "cpu" in self.coeffs:
            return self.coeffs["cpu"], "cpu (no runs on this device kind yet)"
        raise ValueError("memory model: no fitted coefficients (run `sam2tune fit`)")

    def save(self, path: str | Path) -> None:
        from sam2tune.paths import atomic_write_json

        atomic_write_json(Path(path), {"coeffs": self.coeffs, "calibration": self.calibration})

    @classmethod
    def load(cls, path: str | Path | None = None) -> MemoryModel:
        p = Path(path) if path else DEFAULT_MODEL_PATH
        d = json.loads(p.read_text())
        return cls(d["coeffs"], d.get("calibration", {}))


def _sizes(S: int) -> dict[str, int]:
    t = (S // 16) ** 2
    return {
        "frame": 3 * S * S * 4,
        "maskmem": MEM_DIM * t * 2,
        "masks": (S // 4) ** 2 * 4,
        "ptr": 256 * 4 + 4,
        "pos_enc": MEM_DIM * t * 4,
        "tokens": t,
    }


def attended_frames(w: Workload, c: Candidate) -> int:
    cond = (
        w.num_cond_frames
        if c.max_cond_frames_in_attn == -1
        else min(w.num_cond_frames, c.max_cond_frames_in_attn)
    )
    return cond + NUM_MASKMEM - 1


def predict(
    w: Workload, c: Candidate, model: MemoryModel, device_kind: str = "cuda"
) -> dict[str, Any]:
    """Predicted peaks, term by term (integer bytes), for workload ``w`` under knobs ``c``.

    Returns:
        ``{"terms": {term: device bytes}, "host_terms": {...}, "device_peak_bytes",
        "host_peak_bytes", "calibrated_on": ...}``.
    """
    k, source = model.kind(device_kind)
    S = c.image_size or w.image_size
    z = _sizes(S)
    N, K = w.num_frames, w.num_objects
    seg = c.segment_frames if c.segment_frames and c.segment_frames < N else 0
    span = seg or N  # frames one session holds
    loaded = STREAM_WINDOW if c.strategy == "stream" else span
    frames = loaded * z["frame"]
    obj_frames = w.object_frames if w.object_frames is not None else K * N
    obj_frames = min(obj_frames, K * span)
    per_full = z["maskmem"] + z["masks"] + z["ptr"]
    if c.strategy in ("release", "stream"):
        cond = min(w.num_cond_frames, span)
        window = min(READ_WINDOW, span)
        n_full = min(obj_frames, K * cond)
        n_window = min(obj_frames - n_full, K * window)
        state_host_part = n_full * (z["maskmem"] + z["masks"]) + n_window * z["maskmem"]
        state = n_full * per_full + n_window * (z["maskmem"] + z["ptr"]) + z["pos_enc"]
    else:
        state_host_part = obj_frames * (z["maskmem"] + z["masks"])
        state = obj_frames * per_full + z["pos_enc"]
    B = K if c.predictor == "legacy_batched" else 1
    M = attended_frames(w, c)
    act = S * S * (k["a_img"] + k["a_obj"] * B) + k["a_mem"] * B * z["tokens"] * M
    if c.dtype == "bfloat16":
        act *= k.get("bf16_factor", 1.0)
    cached = k["c_feat"] * S * S
    bank = M * z["maskmem"] * B if c.offload_state_to_cpu else 0
    frames_dev = 0 if c.offload_video_to_cpu else frames
    state_dev = state - state_host_part if c.offload_state_to_cpu else state
    weights = w.weights_bytes
    terms = {
        "weights": int(weights),
        "frames": int(frames_dev),
        "state": int(state_dev),
        "cached_features": int(cached),
        "activations": int(act),
        "bank_copy": int(bank),
    }
    device_peak = sum(terms.values())
    host_terms = {
        "baseline": int(k["host_base"]),
        "frames": int(frames - frames_dev),
        "state": int(state - state_dev),
    }
    if device_kind == "cpu":  # everything lives in host RAM
        host_terms["device_side"] = int(k.get("host_share", 1.0) * device_peak)
    host_peak = sum(host_terms.values())
    return {
        "terms": terms,
        "host_terms": host_terms,
        "device_peak_bytes": int(device_peak),
        "host_peak_bytes": int(host_peak),
        "calibrated_on": model.calibration.get(source.split(" ")[0], {})
        | {"coefficients": source},
        "image_size": S,
    }


def _features(w: Workload, c: Candidate) -> list[float]:
    S = c.image_size or w.image_size
    B = w.num_objects if c.predictor == "legacy_batched" else 1
    return [S * S, S * S * B, B * (S // 16) ** 2 * attended_frames(w, c)]


def fit(rows: list[dict[str, Any]], device_kind: str) -> tuple[dict[str, float], dict[str, Any]]:
    """Least-squares coefficients from recorded runs (dicts with the row, ``object_frames`` and
    ``estimate`` terms). Activations come from ``activation_peak_bytes`` (CPU, tracked) or the
    CUDA step peak; coefficients are clipped at zero."""
    if not rows:
        raise ValueError(f"memory model: no ok runs on {device_kind} to fit")
    X, y_act, feats, rss_resid = [], [], [], []
    for r in rows:
        w, c = r["workload"], r["candidate"]
        X.append(_features(w, c))
        y_act.append(r["activation_bytes"])
        S = c.image_size or w.image_size
        feats.append(r["cached_features_bytes"] / (S * S))
    X = np.asarray(X, float)
    y = np.asarray(y_act, float)
    scale = X.max(axis=0)
    scale[scale == 0] = 1
    coef, *_ = np.linalg.lstsq(X / scale, y, rcond=None)
    coef = np.clip(coef / scale, 0, None)
    k = {
        "a_img": float(coef[0]),
        "a_obj": float(coef[1]),
        "a_mem": float(coef[2]),
        "c_feat": float(np.median(feats)),
        "host_base": 0.0,
        "host_share": 1.0,
    }
    bf = [r for r in rows if r["candidate"].dtype == "bfloat16"]
    if bf:
        ratios = [
            r["activation_bytes"]
            / max(1.0, float(np.dot(_features(r["workload"], r["candidate"]), coef)))
            for r in bf
        ]
        k["bf16_factor"] = float(np.median(ratios))
    # host: baseline = median of (RSS - the model's device-side or offloaded bytes)
    m = MemoryModel({device_kind: k})
    for r in rows:
        p = predict(r["workload"], r["candidate"], m, device_kind)
        rss_resid.append(r["peak_host_rss_bytes"] - (p["host_peak_bytes"] - k["host_base"]))
    k["host_base"] = float(np.median(rss_resid))
    info = {
        "device_kind": device_kind,
        "runs": len(rows),
        "run_ids": [r["run_id"] for r in rows],
        "devices": sorted({r["device_name"] or "?" for r in rows}),
        "weights": sorted({r["weights"] for r in rows}),
        "image_sizes": sorted(
            {(r["candidate"].image_size or r["workload"].image_size) for r in rows}
        ),
        "max_frames": max(r["workload"].num_frames for r in rows),
        "target": "cuda_max_allocated_bytes"
        if device_kind == "cuda"
        else "est_device_peak_bytes (estimate)",
    }
    return k, info


def rel_error(pred: float, actual: float) -> float:
    return abs(pred - actual) / actual if actual else math.inf

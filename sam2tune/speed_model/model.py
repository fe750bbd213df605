"""Time per frame and end-to-end time, predicted per device kind.

SAM 2's propagation step, per frame: the image encoder once (its cost grows with the encoder's
parameters and the S x S input), then, per object (SAM 2.1's per-object predictor runs them one
at a time), memory attention over the memory frames read, the mask decoder and the memory
encoder — the same modules for every model size, costing with S and the memory tokens read —
plus the host's work (decoding, mask copies). So

    step(k objects) = h + e * P * s2 + k * (o + q * s2 + a * s2 * m / 8 + a2 * s2**2 * (m + 1) / 8)

with ``P`` the model's parameters (1e8), ``s2 = (S / 1024)**2`` and ``m`` the memory frames
attention reads: ``a`` the attention's work linear in the tokens read, ``a2`` its quadratic part
(every query token of the current frame against every key token of it and of the ``m`` memory
frames: s2 x s2 (m + 1)), which the CPU's runs above 512 px need (without it 768-1024 px steps
were predicted 12-39 % fast). bfloat16 scales the whole step by a fitted factor; the legacy
batched predictor runs the per-object part for all objects at once, scaled by its own fitted
factor, and ``object_batch`` (objects in ``n`` batched calls a step) scales it by
:func:`batch_factor`, whose two terms are fitted on object-batch runs where a device kind has
them (else the legacy factor interpolated in the calls, said so in the provenance). Loading
(``init_state``) costs ``i0 + i1 * frames * video megapixels`` for the strategies that load the
video (stock, release), ``i0`` for stream, whose decoding (the same ``i1`` per frame and
megapixel) runs during propagation: inline before each step with ``stream_prefetch=0``, else on
``prefetch`` workers beside the accelerator's steps, so frames take at least decode / prefetch
each (on a CPU the steps use the cores: decoding adds to them). End-to-end = init + sum over
frames of step(objects present). Coefficients are fitted on recorded runs' steady step times
(their timelines, warm-up excluded), relative error minimised, non-negative.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from sam2tune.memory_model.reads import memory_read, object_batches
from sam2tune.memory_model.workload import Candidate, Workload
from sam2tune.resources import data_dir

__all__ = [
    "SpeedModel",
    "SpeedPrediction",
    "predict_speed",
    "step_features",
    "DEFAULT_SPEED_MODEL_PATH",
    "COEFFS",
    "load_speed_model",
    "speed_note",
    "batch_factor",
    "local_factor",
]

DEFAULT_SPEED_MODEL_PATH = data_dir("conf") / "speed_model.json"
#: the step's linear coefficients (seconds per unit feature), in :func:`step_features` order
COEFFS = ("h", "e", "o", "q", "a", "a2")


@cache
def _params_1e8(model: str) -> float:
    from sam2tune.config.presets import model_preset

    return model_preset(model).weights_bytes / 4 / 1e8


def step_features(model: str, S: int, k: int, mem_frames: int) -> list[float]:
    """The step's features for ``k`` objects (coefficients :data:`COEFFS`)."""
    s2 = (S / 1024) ** 2
    return [1.0, _params_1e8(model) * s2, float(k), k * s2, k * s2 * mem_frames / 8,
            k * s2 * s2 * (mem_frames + 1) / 8]


@dataclass
class SpeedModel:
    """Fitted step and loading coefficients per device kind (``cpu`` / ``cuda``) and what they
    were fitted on (devices, runs, held-out error)."""

    coeffs: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"coeffs": self.coeffs, "calibration": self.calibration}

    def save(self, path: Path) -> None:
        from sam2tune.paths import atomic_write_json

        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path = DEFAULT_SPEED_MODEL_PATH) -> SpeedModel:
        d = json.loads(Path(path).read_text())
        return cls(d.get("coeffs", {}), d.get("calibration", {}))


@dataclass(frozen=True)
class SpeedPrediction:
    """How fast a configuration runs on a device kind, predicted, with its provenance."""

    #: the steady step time with every object present (s)
    step_s: float
    #: steady frames per second with every object present
    fps: float
    #: loading (``init_state``) time (s)
    init_s: float
    #: init + every frame's step (objects entering late track fewer frames), seconds
    end_to_end_s: float
    #: the device(s) the coefficients were fitted on, their runs and held-out error
    provenance: str
    figure: str = "predicted"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def batch_factor(k: dict[str, float], objects: int, calls: int) -> float:
    """The per-object part's factor when ``objects`` objects run in ``calls`` batched calls a
    step (``knobs.object_batch``; 1 where each object runs on its own, ``calls == objects``):
    ``1 - phi * (objects - calls) / (objects - 1) + psi * (objects / calls - 1)`` - ``phi`` the
    share of the per-object cost that one call for every object saves (launches, Python, small
    kernels), linear in the calls; ``psi`` what batching costs per object and per extra object in
    a batch. Fitted on object-batch runs where a device kind has them (``batch_phi`` /
    ``batch_psi``); else the legacy batched predictor's factor at one call, 1 at one call per
    object, linear in between (``phi = 1 - legacy``, ``psi = 0``)."""
    if objects <= 1 or calls >= objects:
        return 1.0
    phi = k.get("batch_phi", 1.0 - k.get("legacy", 1.0))
    psi = k.get("batch_psi", 0.0)
    u, v = (objects - calls) / (objects - 1), objects / calls - 1.0
    return max(0.05, 1.0 - phi * u + psi * v)


def _step(
    k: dict[str, float], model: str, S: int, objects: int, mem: int, c: Candidate,
    calls: int | None = None,
) -> float:
    x = step_features(model, S, objects, mem)
    base = k["h"] * x[0] + k["e"] * x[1]
    # a model file fitted before a2 existed has none: 0, the shape it was fitted with
    per_obj = sum(k.get(n, 0.0) * v for n, v in zip(COEFFS[2:], x[2:], strict=True))
    if c.predictor == "legacy_batched":
        per_obj *= k.get("legacy", 1.0)
    elif calls is not None:  # object_batch: batched calls of SAM 2's own step
        per_obj *= batch_factor(k, objects, calls)
    t = base + per_obj
    return t * k.get("bf16", 1.0) if c.dtype == "bfloat16" else t


def local_factor(k: dict[str, float], step_s: float) -> float:
    """The factor this machine's probe puts on a step the calibration predicts at ``step_s``
    (:mod:`sam2tune.speed_model.local`): ``local_s * (step_s / local_t) ** local_p``; 1 for a
    kind's coefficients as calibrated."""
    if "local_s" not in k:
        return 1.0
    ratio = step_s / k["local_t"] if step_s > 0 and k.get("local_t") else 1.0
    return float(k["local_s"] * ratio ** k.get("local_p", 0.0))


def _provenance(model: SpeedModel, kind: str, batched: bool = False) -> str:
    cal = model.calibration.get(kind, {})
    err = cal.get("held_out") or {}
    e = (
        f"; held-out error median {err['median']:.0%}, max {err['max']:.0%} ({err['runs']} runs)"
        if err
        else "; no held-out check"
    )
    devices = ", ".join(cal.get("devices", [])) or "?"
    text = f"speed model fitted on {cal.get('runs', '?')} {kind} runs ({devices}){e}"
    loc = cal.get("local")
    if loc is not None:
        rows = loc.get("runs") or []
        if loc.get("scale"):
            p = float(loc.get("exponent") or 0.0)
            if abs(p) >= 0.005:
                how = (f"x{loc['scale']:.2f} at a {loc['t_ref']:.2f} s step, the ratio growing "
                       f"as the step's time^{p:.2f}")
                cut = f" (cut from {loc['fitted']:.2f})"
            else:
                how = f"x{loc['scale']:.2f}"
                cut = f" (the probe's power {loc['fitted']:.2f} cut to 0)"
            how += cut if loc.get("clamped") else ""
            text += (
                f"; time terms scaled {how} to this machine by its probe ("
                + ", ".join(f"{r['image_size']} px: {r['measured_step_s']:.3f} s a step "
                            f"measured vs {r['predicted_step_s']:.3f} s calibrated" for r in rows)
                + ")"
            )
        else:
            text += f"; not scaled to this machine ({loc.get('why', '?')})"
    if batched:
        b = cal.get("object_batch") or {}
        h = b.get("held_out") or {}
        if not b:
            text += ("; object batches: the legacy batched predictor's factor interpolated in "
                     "the batched calls, not fitted on object-batch runs")
        else:
            text += (f"; object-batch term fitted on {b['runs']} {kind} runs"
                     + (f", held-out batch factor error median {h['median']:.0%}, max "
                        f"{h['max']:.0%} ({h['runs']} runs)" if h else ", no held-out check"))
    return text


def predict_speed(
    w: Workload, c: Candidate, model: SpeedModel, device_kind: str = "cuda"
) -> SpeedPrediction | None:
    """Predicted steady fps and end-to-end time (None: no coefficients for this device kind)."""
    k = model.coeffs.get(device_kind)
    if not k:
        return None
    S = c.image_size or w.image_size
    read = memory_read(w, c, S)
    mem = int(read["frames"])
    calls = object_batches(w, c)
    full = _step(k, w.model, S, w.num_objects, mem, c, calls)
    base = _step(k, w.model, S, 0, mem, c)
    g = local_factor(k, full)  # this machine's probe (1 as calibrated)
    full, base = g * full, g * base
    per_obj = (full - base) / max(1, w.num_objects)
    obj_frames = w.object_frames if w.object_frames is not None else w.num_objects * w.num_frames
    frames_s = w.num_frames * base + obj_frames * per_obj
    megapx = w.video_height * w.video_width / 1e6
    s_load = k.get("local_s", 1.0)  # loading and decoding: the probe's mean ratio
    decode = s_load * k.get("i1", 0.0) * w.num_frames * megapx  # the loader's decoding
    init = s_load * k.get("i0", 0.0)
    if c.strategy != "stream":
        init += decode
    elif c.stream_prefetch > 0 and device_kind != "cpu":  # decoded ahead, beside the steps
        frames_s = max(frames_s, decode / c.stream_prefetch)
    else:  # inline before each step (on a CPU the steps hold the cores the workers would use)
        frames_s += decode
    return SpeedPrediction(
        step_s=full,
        fps=1.0 / full if full > 0 else float("inf"),
        init_s=init,
        end_to_end_s=init + frames_s,
        provenance=_provenance(model, device_kind, calls < w.num_objects),
    )


def load_speed_model(path: Path | None = None) -> SpeedModel:
    """The shipped speed model (``conf/speed_model.json``), or ``path``'s; empty when absent."""
    p = Path(path) if path else DEFAULT_SPEED_MODEL_PATH
    return SpeedModel.load(p) if p.is_file() else SpeedModel()


def _duration(s: float) -> str:
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m} min" if h else (f"{m} min {sec} s" if m else f"{sec} s")


def speed_note(
    p: SpeedPrediction | None, model: SpeedModel, kind: str, num_frames: int,
    gpu: str | None = None,
) -> tuple[str, str]:
    """(the figure in words, what it rests on) for a prediction, naming the device it was
    calibrated on and saying so when the GPU asked about is another one."""
    if p is None:
        return "no speed figure", f"the speed model has no {kind} calibration"
    devices = model.calibration.get(kind, {}).get("devices", [])
    text = (
        f"expected {p.fps:.1f} fps, {_duration(p.end_to_end_s)} for {num_frames:,} frames "
        f"(loading {_duration(p.init_s)})"
    )
    rests = p.provenance
    if gpu and kind == "cuda" and not any(gpu.lower() in d.lower() for d in devices):
        rests += (
            f"; {gpu} was never calibrated: this is the figure of {', '.join(devices) or '?'}, "
            "not scaled (run scripts/gpu-calibrate on it)"
        )
    return text, rests

"""Fitting the speed model on recorded runs, and its held-out error.

Each ok run gives observations from its timeline: the steady step times (warm-up excluded, the
frames under the tensor tracker left out) grouped by the number of objects present, one median
per group. The held-out discipline is the memory model's: the validation design's runs (seeded
random points off the calibration grid, and one extrapolation per axis, fitted on the subset of
the calibration that stops short of it)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sam2tune.memory_model.calibrate import _SUBSETS, _axis_tags, _rel_lstsq, run_inputs
from sam2tune.memory_model.reads import memory_read
from sam2tune.memory_model.workload import Candidate, Workload
from sam2tune.paths import report_path
from sam2tune.speed_model.model import COEFFS, SpeedModel, predict_speed, step_features
from sam2tune.speed_model.timing import WARMUP_FRAMES

__all__ = ["Observation", "observations", "fit", "evaluate", "fit_and_evaluate"]


@dataclass(frozen=True)
class Observation:
    """One run's steady step time with ``objects`` objects present, and its loading time."""

    run_id: str
    config_hash: str
    device_kind: str
    device_name: str
    workload: Workload
    candidate: Candidate
    objects: int
    step_s: float
    init_s: float


def _groups(timeline: list[dict[str, Any]], prompted: set[int]) -> dict[int, float]:
    """Median steady step time per number of objects present; prompted frames are left out
    (SAM 2 returns the output it computed when the frame was prompted: no tracking step)."""
    timed = [t for t in timeline if not t.get("tracked") and t.get("step_s")]
    by: dict[int, list[float]] = {}
    for t in timed[WARMUP_FRAMES:]:
        if int(t.get("frame", -1)) in prompted:
            continue
        by.setdefault(int(t.get("objects") or 0), []).append(float(t["step_s"]))
    return {k: statistics.median(v) for k, v in by.items() if k > 0 and len(v) >= 2}


def observations(results_dir: str | Path) -> list[Observation]:
    """Every ok run of ``results_dir`` (Meta's sam2) as speed observations."""
    out = []
    for r in run_inputs(results_dir):
        if r.candidate.impl != "sam2":
            continue
        rep = json.loads(report_path(results_dir, r.run_id).read_text())
        init = float(rep["row"].get("init_s") or 0.0)
        prompted = {int(p["frame"]) for p in rep.get("prompts") or []}
        for k, step in sorted(_groups(rep.get("timeline") or [], prompted).items()):
            out.append(Observation(r.run_id, r.config_hash, r.device_kind,
                                   r.device_name or "?", r.workload, r.candidate, k, step,
                                   init))
    return out


def _x(o: Observation) -> list[float]:
    S = o.candidate.image_size or o.workload.image_size
    mem = int(memory_read(o.workload, o.candidate, S)["frames"])
    return step_features(o.workload.model, S, o.objects, mem)


def fit(obs: Sequence[Observation]) -> dict[str, float]:
    """Coefficients of one device kind: the step's (per-object float32 runs), then the
    bfloat16 and legacy-batched factors, then loading."""
    plain = [o for o in obs if o.candidate.dtype == "float32" and
             o.candidate.predictor == "per_object"]
    if len(plain) < len(COEFFS):
        raise ValueError(f"speed model: {len(plain)} float32 per-object observations to fit")
    X = np.array([_x(o) for o in plain])
    y = np.array([o.step_s for o in plain])
    k = dict(zip(COEFFS, (float(v) for v in _rel_lstsq(X, y)), strict=True))

    def pred(o: Observation) -> tuple[float, float]:
        x = _x(o)
        base = k["h"] * x[0] + k["e"] * x[1]
        return base, sum(k[n] * v for n, v in zip(COEFFS[2:], x[2:], strict=True))

    bf = [o.step_s / sum(pred(o)) for o in obs if o.candidate.dtype == "bfloat16"
          and o.candidate.predictor == "per_object"]
    k["bf16"] = float(statistics.median(bf)) if bf else 1.0
    lg = [(o.step_s - pred(o)[0]) / pred(o)[1] for o in obs
          if o.candidate.predictor == "legacy_batched" and o.candidate.dtype == "float32"
          and pred(o)[1] > 0]
    k["legacy"] = float(max(0.05, statistics.median(lg))) if lg else 1.0
    _fit_init(obs, k)
    return k


def _fit_init(obs: Sequence[Observation], k: dict[str, float]) -> None:
    runs = {o.run_id: o for o in obs if o.candidate.strategy != "stream" and o.init_s > 0}
    if len(runs) < 2:
        k["i0"], k["i1"] = 0.0, 0.0
        return
    rows = list(runs.values())
    X = np.array([[1.0, o.workload.num_frames * o.workload.video_height
                   * o.workload.video_width / 1e6] for o in rows])
    y = np.array([o.init_s for o in rows])
    k["i0"], k["i1"] = (float(v) for v in _rel_lstsq(X, y))


def _error_row(o: Observation, m: SpeedModel, axis: str, n_fit: int) -> dict[str, Any]:
    w = Workload(**{**o.workload.__dict__, "num_objects": o.objects, "first_frames": None,
                    "cond_frames": None, "object_frames": None})
    p = predict_speed(w, o.candidate, m, o.device_kind)
    assert p is not None
    return {
        "run_id": o.run_id, "axis": axis, "fitted_on_runs": n_fit, "model": o.workload.model,
        "image_size": o.candidate.image_size or o.workload.image_size, "objects": o.objects,
        "dtype": o.candidate.dtype, "predictor": o.candidate.predictor,
        "step_pred_s": p.step_s, "step_actual_s": o.step_s,
        "step_err": p.step_s / o.step_s - 1,
    }


def _fits_subset(c: Observation, o: Observation, fit_on: dict[str, int]) -> bool:
    """Whether calibration observation ``c`` is in the subset an extrapolation test of ``o``
    may be fitted on (the memory model's subsets)."""
    ((name, v),) = fit_on.items()
    if name == "model_excluded":
        return c.workload.model != o.workload.model
    return bool(_SUBSETS[name](c, v))


def evaluate(calib: list[Observation], valid: list[Observation], kind: str,
             axis_of: dict[str, tuple[str, dict[str, int]]]) -> pd.DataFrame:
    """Error of every held-out observation: random runs against the fit on the whole
    calibration, extrapolation runs against the fit on the subset their axis allows."""
    full = SpeedModel({kind: fit(calib)})
    rows = []
    for o in valid:
        axis, fit_on = axis_of.get(o.config_hash, ("random", {}))
        m, n = full, len({c.run_id for c in calib})
        if fit_on:
            sub = [c for c in calib if _fits_subset(c, o, fit_on)]
            m, n = SpeedModel({kind: fit(sub)}), len({c.run_id for c in sub})
        rows.append(_error_row(o, m, axis, n))
    return pd.DataFrame(rows)


def fit_and_evaluate(
    calibration_dir: str | Path, validation_dir: str | Path | None = None, seed: int = 0
) -> tuple[SpeedModel, pd.DataFrame]:
    """The speed model fitted per device kind on ``calibration_dir``, and the held-out errors
    of ``validation_dir``'s runs (with their axes)."""
    calib = observations(calibration_dir)
    valid = observations(validation_dir) if validation_dir else []
    model = SpeedModel()
    frames = []
    for kind in sorted({o.device_kind for o in calib}):
        cal = [o for o in calib if o.device_kind == kind]
        model.coeffs[kind] = fit(cal)
        val = [o for o in valid if o.device_kind == kind]
        info: dict[str, Any] = {
            "runs": len({o.run_id for o in cal}),
            "observations": len(cal),
            "devices": sorted({o.device_name for o in cal}),
            "calibration_dir": str(calibration_dir),
        }
        if val:
            ev = evaluate(cal, val, kind, _axis_tags(seed, kind)).assign(device_kind=kind)
            frames.append(ev)
            e = ev["step_err"].abs()
            info["held_out"] = {"runs": int(ev["run_id"].nunique()), "median": float(e.median()),
                                "max": float(e.max()), "validation_dir": str(validation_dir)}
        model.calibration[kind] = info
    return model, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

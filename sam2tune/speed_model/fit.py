"""Fitting the speed model on recorded runs, and its held-out error.

Each ok run gives observations from its timeline: the steady step times (warm-up excluded, the
frames under the tensor tracker left out) grouped by the number of objects present, one median
per group. The held-out discipline is the memory model's: the validation design's runs (seeded
random points off the calibration grid, and one extrapolation per axis, fitted on the subset of
the calibration that stops short of it)."""

from __future__ import annotations

import dataclasses
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

__all__ = [
    "Observation", "observations", "fit", "evaluate", "fit_and_evaluate",
    "BatchObservation", "batch_observations", "fit_batch", "evaluate_batch",
]


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


def _plain(o: Observation) -> bool:
    """A float32 run of the per-object predictor (what the step's coefficients are fitted on)."""
    return o.candidate.dtype == "float32" and o.candidate.predictor == "per_object"


def fit(obs: Sequence[Observation]) -> dict[str, float]:
    """Coefficients of one device kind: the step's (per-object float32 runs), then the
    bfloat16 and legacy-batched factors, then loading."""
    plain = [o for o in obs if _plain(o)]
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


def _fit_batch_term(model: SpeedModel, kind: str, batch_dir: Path) -> pd.DataFrame:
    """The object-batch term of ``kind`` fitted on ``batch_dir/calibration`` (or ``batch_dir``
    itself where it has no such folder), checked on ``batch_dir/validation`` where there is one;
    recorded in the model's calibration info (empty: no runs)."""
    cal_dir, val_dir = batch_dir / "calibration", batch_dir / "validation"
    if not cal_dir.is_dir():
        cal_dir = batch_dir
    cal = [o for o in batch_observations(cal_dir)
           if o.candidate.dtype == "float32" and _kind_of(cal_dir, o.run_id) == kind]
    if not cal:
        return pd.DataFrame()
    term = fit_batch(cal)
    model.coeffs[kind].update(term)
    on = {(o.objects, o.candidate.image_size or o.workload.image_size) for o in cal}
    val = [o for o in (batch_observations(val_dir) if val_dir.is_dir() else [])
           if _kind_of(val_dir, o.run_id) == kind]
    ev = evaluate_batch(val, term, kind=kind, model=model, calibrated_on=on) if val else None
    info: dict[str, Any] = {"runs": len(cal), "dir": str(batch_dir)}
    if ev is not None:
        info["held_out"] = {"runs": len(ev), "median": float(ev["g_err"].abs().median()),
                            "max": float(ev["g_err"].abs().max()),
                            "step_median": float(ev["step_err"].abs().median()),
                            "step_max": float(ev["step_err"].abs().max())}
        info["rows"] = [{c: (round(v, 6) if isinstance(v, float) else v) for c, v in r.items()}
                        for r in ev.drop(columns="run_id").to_dict("records")]
    model.calibration[kind]["object_batch"] = info
    return ev.assign(device_kind=kind) if ev is not None else pd.DataFrame()


def _kind_of(results_dir: Path, run_id: str) -> str:
    rep = json.loads(report_path(results_dir, run_id).read_text())
    return "cuda" if str(rep["row"].get("device")) == "cuda" else "cpu"


#: the share a supplement's machine factor may still move by when its placement stops
_PLACE_TOL = 1e-4


def _scaled(obs: Sequence[Observation], g: float) -> list[Observation]:
    """``obs`` on the calibration machine's scale: steps divided by the machine factor ``g``;
    loading left out of the loading fit (``init_s`` 0: measured on another machine)."""
    return [dataclasses.replace(o, step_s=o.step_s / g, init_s=0.0) for o in obs]


_Placed = tuple[Path, float, list[Observation], list[Observation]]


def _joined(cal: Sequence[Observation], placed: Sequence[_Placed]) -> list[Observation]:
    """The calibration's observations and every placed supplement's, on its scale."""
    return [*cal, *(x for _, g, sc, _ in placed for x in _scaled(sc, g))]


def place(
    calib: Sequence[Observation], sup: Sequence[Observation]
) -> tuple[dict[str, float], float, list[float]]:
    """The coefficients fitted on ``calib`` and a supplement ``sup`` measured on another
    machine, that machine's factor ``g`` (its steps are ``g`` times the calibration machine's)
    and the anchors' ratios it is the median of. The anchors are the supplement's float32
    per-object observations at sizes the calibration's own have (at most its largest): ``g`` is
    their median ratio to the joint fit, the fit redone on the supplement divided by ``g``, until
    ``g`` settles. ValueError without anchors (nothing ties the machines together)."""
    top = max(o.candidate.image_size or o.workload.image_size for o in calib if _plain(o))
    anchors = [o for o in sup if _plain(o) and (o.candidate.image_size or o.workload.image_size)
               <= top]
    if not anchors:
        raise ValueError(f"speed model: the supplement has no anchor run at or below {top} px")
    k, g = fit(calib), 1.0
    ratios: list[float] = []
    for _ in range(50):
        m = SpeedModel({anchors[0].device_kind: k})
        ratios = [o.step_s / float(_error_row(o, m, "", 0)["step_pred_s"]) for o in anchors]
        new = float(statistics.median(ratios))
        k = fit([*calib, *_scaled(sup, new)])
        settled = abs(new / g - 1) < _PLACE_TOL
        g = new
        if settled:
            break
    return k, g, ratios


def _place_all(
    model: SpeedModel, kind: str, cal: list[Observation],
    sups: list[tuple[Path, list[Observation], list[Observation]]], info: dict[str, Any],
) -> list[_Placed]:
    """Each supplement of ``kind`` placed (:func:`place`) against the calibration with the
    earlier ones in it; ``model``'s coefficients and ``info`` (runs, devices, ``supplements``)
    updated. (folder, machine factor, its fitted and held-out observations) per supplement."""
    placed: list[_Placed] = []
    for d, sc, sv in sups:
        sc = [o for o in sc if o.device_kind == kind]
        if not sc:
            continue
        k, g, ratios = place(_joined(cal, placed), sc)
        model.coeffs[kind] = k
        placed.append((d, g, sc, [o for o in sv if o.device_kind == kind]))
        info.setdefault("supplements", []).append({
            "dir": str(d), "runs": len({o.run_id for o in sc}),
            "anchors": len(ratios), "scale": g, "ratios": ratios,
            "devices": sorted({o.device_name for o in sc})})
        info["runs"] += len({o.run_id for o in sc})
        info["observations"] += len(sc)
        info["devices"] = sorted({*info["devices"], *(o.device_name for o in sc)})
    return placed


def fit_and_evaluate(
    calibration_dir: str | Path, validation_dir: str | Path | None = None, seed: int = 0,
    batch_dir: str | Path | None = None, supplements: Sequence[str | Path] = (),
) -> tuple[SpeedModel, pd.DataFrame]:
    """The speed model fitted per device kind on ``calibration_dir``, and the held-out errors
    of ``validation_dir``'s runs (with their axes); with ``batch_dir``, the object-batch term
    fitted on its ``calibration/`` runs and checked on its ``validation/`` runs (their errors in
    ``model.calibration[kind]["object_batch"]``). Each of ``supplements`` is a folder of runs
    measured on another machine (``calibration/``, fitted on, placed on the calibration's scale
    by its anchors: :func:`place`; ``validation/``, held out, predicted on that machine's scale,
    axis ``supplement: <folder name>``)."""
    calib = observations(calibration_dir)
    valid = observations(validation_dir) if validation_dir else []
    sups = [(Path(d), observations(Path(d) / "calibration"),
             observations(Path(d) / "validation") if (Path(d) / "validation").is_dir() else [])
            for d in supplements]
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
        placed = _place_all(model, kind, cal, sups, info)
        every = _joined(cal, placed)
        held = []
        if val:
            held.append(evaluate(every, val, kind, _axis_tags(seed, kind)))
        joint, n_fit = SpeedModel({kind: model.coeffs[kind]}), len({c.run_id for c in every})
        for d, g, _, sv in placed:
            if sv:
                held.append(pd.DataFrame([_error_row(o, joint, f"supplement: {d.name}", n_fit)
                                          for o in _scaled(sv, g)]))
        if held:
            ev = pd.concat(held, ignore_index=True).assign(device_kind=kind)
            frames.append(ev)
            e = ev["step_err"].abs()
            info["held_out"] = {"runs": int(ev["run_id"].nunique()), "median": float(e.median()),
                                "max": float(e.max()), "validation_dir": str(validation_dir)}
        model.calibration[kind] = info
        if batch_dir:
            _fit_batch_term(model, kind, Path(batch_dir))
    return model, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@dataclass(frozen=True)
class BatchObservation:
    """One object-batch run beside its K = 1 reference (same objects, size, frames, video,
    results dir): steady tracking and step times with every object present."""

    run_id: str
    workload: Workload
    candidate: Candidate
    objects: int
    #: batched calls per step with every object present (``object_batches``)
    calls: int
    tracking_s: float
    step_s: float
    #: tracking time at K over the reference run's (the batch factor, measured)
    g: float


def _steady_most(rep: dict[str, Any], w: Workload) -> tuple[Workload, float, float] | None:
    """The steady frames with the most objects present (at least two such frames): the
    workload of those objects (their prompted frames), median tracking_s and step_s."""
    prompted = {int(p["frame"]) for p in rep.get("prompts") or []}
    timed = [t for t in rep.get("timeline") or [] if not t.get("tracked") and t.get("step_s")]
    by: dict[int, list[dict[str, Any]]] = {}
    for t in timed[WARMUP_FRAMES:]:
        if int(t.get("frame", -1)) not in prompted and t.get("tracking_s") is not None:
            by.setdefault(int(t.get("objects") or 0), []).append(t)
    ns = [n for n, rows in by.items() if len(rows) >= 2 and n > 0]
    if not ns:
        return None
    rows = by[max(ns)]
    f0 = min(int(t["frame"]) for t in rows)
    present = [fs for fs in w.prompted() if min(fs) <= f0]
    if len(present) != max(ns):
        return None
    sub = Workload(**{**w.__dict__, "num_objects": len(present), "cond_frames": present,
                      "first_frames": None, "object_frames": None})
    return (sub, statistics.median(float(t["tracking_s"]) for t in rows),
            statistics.median(float(t["step_s"]) for t in rows))


def batch_observations(results_dir: str | Path) -> list[BatchObservation]:
    """Every ok per-object run of ``results_dir`` with ``object_batch != 1`` that has a K = 1
    reference there (same video, size, frames); references themselves are not observations
    (their factor is 1). Each run is read at its steady frames with the most objects present."""
    from sam2tune.memory_model.reads import object_batches

    runs = []
    for r in run_inputs(results_dir):
        if r.candidate.impl != "sam2" or r.candidate.predictor != "per_object":
            continue
        rep = json.loads(report_path(results_dir, r.run_id).read_text())
        t = _steady_most(rep, r.workload)
        if t:
            runs.append((r, t))

    def same(a: Any, w: Workload) -> tuple[Any, ...]:
        return (w.model, a.candidate.image_size or w.image_size, w.num_objects, w.num_frames,
                w.video_height, w.video_width, a.candidate.dtype, a.candidate.strategy,
                tuple(map(tuple, w.prompted())))

    ref = {same(r, w): trk for r, (w, trk, _) in runs if r.candidate.object_batch == 1}
    out = []
    for r, (w, trk, step) in runs:
        base = ref.get(same(r, w))
        if r.candidate.object_batch == 1 or base is None:
            continue
        out.append(BatchObservation(r.run_id, w, r.candidate, w.num_objects,
                                    object_batches(w, r.candidate), trk, step, trk / base))
    return out


def fit_batch(obs: Sequence[BatchObservation]) -> dict[str, float]:
    """``batch_phi`` / ``batch_psi`` of :func:`~sam2tune.speed_model.model.batch_factor`,
    non-negative, minimising the batch factor's relative error."""
    from sam2tune.memory_model.calibrate import _nnls

    obs = [o for o in obs if o.calls < o.objects]
    if len(obs) < 2:
        raise ValueError(f"speed model: {len(obs)} object-batch observations to fit")
    g = np.array([o.g for o in obs])
    u = np.array([(o.objects - o.calls) / (o.objects - 1) for o in obs])
    v = np.array([o.objects / o.calls - 1 for o in obs])
    # (1 - phi * u + psi * v) / g = 1  <=>  phi * u / g - psi * v / g = 1 / g - 1
    phi, psi = _nnls(np.stack([u / g, -v / g], axis=1), 1 / g - 1)
    return {"batch_phi": float(phi), "batch_psi": float(psi)}


def evaluate_batch(
    valid: Sequence[BatchObservation], coeffs: dict[str, float],
    axes: dict[tuple[int, int, int], str] | None = None, kind: str = "cpu",
    model: SpeedModel | None = None, calibrated_on: set[tuple[int, int]] | None = None,
) -> pd.DataFrame:
    """Held-out object-batch runs against the term ``coeffs`` (``batch_phi`` / ``batch_psi``):
    the batch factor predicted vs measured (the term alone), and the whole step predicted by the
    shipped step coefficients of ``kind`` with that term vs measured (the term in the model).
    ``axes`` maps (objects, K, size) to the axis a run checks; without it a run beyond the
    calibration's (objects, size) pairs ``calibrated_on`` is an extrapolation, else ``random``."""
    from sam2tune.speed_model.model import batch_factor, load_speed_model

    base = model if model is not None else load_speed_model()
    k = {**base.coeffs[kind], **coeffs}
    m = SpeedModel({kind: k}, base.calibration)
    rows = []
    for o in valid:
        S = o.candidate.image_size or o.workload.image_size
        axis = (axes or {}).get((o.objects, o.candidate.object_batch, S), "random")
        if axes is None and calibrated_on:
            if o.objects > max(n for n, _ in calibrated_on):
                axis = "objects_extrapolation"
            elif S not in {s for _, s in calibrated_on}:
                axis = "image_size_extrapolation"
        g = batch_factor(k, o.objects, o.calls)
        p = predict_speed(o.workload, o.candidate, m, kind)
        assert p is not None
        rows.append({
            "run_id": o.run_id, "objects": o.objects, "k": o.candidate.object_batch,
            "calls": o.calls, "image_size": S,
            "axis": axis,
            "g_pred": g, "g_actual": o.g, "g_err": g / o.g - 1,
            "step_pred_s": p.step_s, "step_actual_s": o.step_s,
            "step_err": p.step_s / o.step_s - 1,
        })
    return pd.DataFrame(rows)

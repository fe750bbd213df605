"""The speed model's CPU coefficients scaled to the machine that predicts.

The CPU step coefficients are fitted on one machine's runs; another machine - even of the same
CPU kind, on another day - runs the same steps at another speed (the object-batch runs of
2026-12-02 ran 1.4-1.8x slower than the calibration's machine, same AMD EPYC kind, so every
whole-step prediction was 30-45 % fast). What transfers is the *shape* (how time grows with the
size, the objects, the memories read); what does not is the machine's speed. So the host probe's
short real runs (:mod:`sam2tune.memory_model.host_probe`: sam2.1_tiny, 1 object, stock, at
:data:`~sam2tune.memory_model.host_probe.PROBE_SIZES`, measured once per machine and cached)
keep their per-frame step times, and :func:`local_scale` compares their steady step (the
speed model's own reading: warm-up and prompted frames left out, median) with what the shipped
coefficients predict for the very same workload.

The ratio is not one number: on the machine of 2026-12-02 the probe's 256 px step ran 0.91x the
calibration's, its 512 px step 1.30x, tiny at 768 px 1.69x and base_plus 1.4-1.8x - the bigger a
step's work, the slower this machine is at it (caches, memory bandwidth), not only slower. So
the scale is a power of the step's own calibrated time, fitted through the probe's points (least
squares in logs):

    local step = s * (t / t_ref) ** p * t

``t`` the calibrated step, ``t_ref`` the probe steps' geometric mean, ``s`` the ratios' geometric
mean and ``p`` how the ratio grows with the step, kept within ``[0, MAX_EXPONENT]``: a machine of
the calibration's kind is not faster at bigger steps than at small ones (on the same machine,
hours later, the probe's 512 px step ran 0.75x against 0.90x at 256 px, while the 768 px run ran
1.06x: the 512 px point was the probe's noise, not the machine's shape), and a power beyond
MAX_EXPONENT from short runs is noise too. The probe's third size (768 px, a step about 9x its
256 px one) is there for this power: two close points (0.35 s and 1.2 s steps) left it to the
noise of one of them, and tiny at 768 px was predicted 5-37 % fast on every held-out set. The
step's parts (the encoder's, the objects') take the full step's factor; loading and decoding
take ``s``; the factors (bfloat16, legacy, object batches) are ratios of the calibration and
stay.

``experiments/bench_speed_local.py`` is the judge: this machine's probe, then real runs off the
probe's points (other sizes, models, object counts), each predicted with the calibration's
coefficients, one scale and the growing scale.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from sam2tune.memory_model.workload import Candidate, Workload
from sam2tune.speed_model.model import (
    SpeedModel,
    SpeedPrediction,
    load_speed_model,
    predict_speed,
    speed_note,
)

__all__ = [
    "local_scale", "localised", "this_machine", "speed_answer", "LOCAL_TERMS", "MAX_EXPONENT",
    "SPEED_TERMS_ENV",
]

#: the local scale's terms in a kind's coefficients
#: (:func:`sam2tune.speed_model.model.local_factor`)
LOCAL_TERMS = ("local_s", "local_p", "local_t")
#: how fast the ratio may grow with the step: a power beyond it from short probe runs is the
#: probe's noise, not the machine (a negative power is cut to 0, one scale for every step)
MAX_EXPONENT = 0.5
#: ``calibrated`` keeps the calibration's CPU figures as they are (no probe)
SPEED_TERMS_ENV = "SAM2TUNE_SPEED_TERMS"


#: a probe whose steady steps had less than this share of their torch threads' cores ran
#: beside other processes: its times are not this machine's speed, and are not used
MIN_CORE_SHARE = 0.6


def _steady(run: dict[str, Any]) -> tuple[int, float, float | None] | None:
    """(objects, median steady step time, median cores a step had) of one probe run, read by
    the fit's own rule (:func:`sam2tune.speed_model.fit._groups`: warm-up, prompted and tracked
    frames left out), for the most objects present."""
    from sam2tune.speed_model.fit import _groups

    prompted = set(run.get("prompted") or [])
    steps = run.get("steps") or []
    rows = [{"frame": s[0], "objects": s[1], "step_s": s[2], "tracked": s[3]} for s in steps]
    groups = _groups(rows, prompted)
    if not groups:
        return None
    k = max(groups)
    if any(len(s) < 5 or s[4] is None for s in steps):
        return k, groups[k], None
    # the same frames' cores: the fit's rule over cpu_s / step_s in place of the step time
    cores = _groups([dict(r, step_s=s[4] / s[2]) for r, s in zip(rows, steps, strict=True)],
                    prompted)
    return k, groups[k], cores.get(k)


def _cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cache_file() -> str:
    from sam2tune.paths import cache_dir

    return str(cache_dir(None) / "host_baseline.json")


def local_scale(
    model: SpeedModel, local: dict[str, Any] | None, kind: str = "cpu"
) -> dict[str, Any]:
    """This machine's scale of ``kind``'s step times from the host probe's runs (``local``:
    :func:`~sam2tune.memory_model.host_probe.measure_local_runs`' value): ``scale`` (the ratios'
    geometric mean; None without usable runs, ``why`` says why), ``exponent`` (how the ratio grows
    with the calibrated step, 0 from one run, within ``[0, MAX_EXPONENT]``; ``fitted`` the power
    through the probe's points, ``clamped`` when it was cut),
    ``t_ref`` (the probe's calibrated steps' geometric mean) and per run the measured and
    predicted steady step."""
    runs = (local or {}).get("runs") or []
    if kind not in model.coeffs:
        return {"scale": None, "why": f"no {kind} calibration", "runs": []}
    if not runs:
        return {"scale": None, "why": (local or {}).get("error") or "no probe runs", "runs": []}
    rows: list[dict[str, Any]] = []
    for r in runs:
        st = _steady(r)
        if st is None:
            continue
        objects, step, cores = st
        threads = r.get("threads")
        if cores is not None and threads and cores < MIN_CORE_SHARE * min(threads, _cpus()):
            return {"scale": None, "runs": [], "why": (
                f"the probe ran beside other processes (its {r['image_size']} px steps had "
                f"{cores:.2f} of {min(threads, _cpus())} cores; to measure it again on an idle "
                f"machine, remove {_cache_file()})")}
        w = Workload(**{**r["workload"], "num_objects": objects, "first_frames": None,
                        "cond_frames": None, "object_frames": None})
        p = predict_speed(w, Candidate(), model, kind)
        if p is None or p.step_s <= 0:
            continue
        rows.append({"image_size": int(r["image_size"]), "objects": objects,
                     "measured_step_s": step, "predicted_step_s": p.step_s,
                     "ratio": step / p.step_s, "cores": cores})
    if not rows:
        return {"scale": None, "why": "the probe runs have no steady steps", "runs": []}
    x = [math.log(float(r["predicted_step_s"])) for r in rows]
    y = [math.log(float(r["ratio"])) for r in rows]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    var = sum((a - mx) ** 2 for a in x)
    slope = (sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / var
             if var > 1e-6 else 0.0)
    used = max(0.0, min(MAX_EXPONENT, slope))
    clamped = abs(used - slope) > 1e-9  # a rounding error's -1e-16 is no cut
    return {"scale": math.exp(my), "exponent": used, "fitted": slope, "clamped": clamped,
            "t_ref": math.exp(mx), "runs": rows}


def localised(
    model: SpeedModel, local: dict[str, Any] | None, kind: str = "cpu", shape: bool = True
) -> SpeedModel:
    """``model`` with ``kind``'s step times scaled to this machine (:func:`local_scale`, its
    terms :data:`LOCAL_TERMS` added to the coefficients) and the calibration info saying so
    (``local``: the scale and the probe's runs, or why there is none); the model unchanged in
    its coefficients without a usable probe. ``shape=False``: one scale for every step (the
    exponent 0; the benchmark's comparison)."""
    info = local_scale(model, local, kind)
    if not shape and info["scale"] is not None:
        info = {**info, "exponent": 0.0, "clamped": False}
    coeffs = {k: dict(v) for k, v in model.coeffs.items()}
    cal = {k: dict(v) for k, v in model.calibration.items()}
    if kind in cal:
        cal[kind]["local"] = info
    if info["scale"] is not None and kind in coeffs:
        coeffs[kind] = {**coeffs[kind], "local_s": info["scale"], "local_p": info["exponent"],
                        "local_t": info["t_ref"]}
    return dataclasses.replace(model, coeffs=coeffs, calibration=cal)


def this_machine(model: SpeedModel, kind: str) -> SpeedModel:
    """``model`` as this machine runs it: on the CPU, scaled by this machine's probe (measured
    once and cached, :func:`sam2tune.memory_model.baseline.host_baseline`) unless
    ``SAM2TUNE_SPEED_TERMS=calibrated``; other kinds (a GPU's speed is the GPU's, not the host's)
    as they are."""
    if kind != "cpu" or kind not in model.coeffs:
        return model
    if os.environ.get(SPEED_TERMS_ENV, "local") == "calibrated":
        return model
    from sam2tune.memory_model.baseline import host_baseline

    return localised(model, host_baseline("cpu", with_local=True).get("local"), kind)


def speed_answer(
    w: Workload, c: Candidate, kind: str, gpu: str | None = None, model: SpeedModel | None = None,
    knobs: tuple[float, list[str]] | None = None,
) -> tuple[SpeedPrediction | None, str, str]:
    """(prediction, the figure in words, what it rests on) with the shipped model unless one
    is given - on the CPU scaled to this machine by its probe
    (:func:`sam2tune.speed_model.local.this_machine`): the one place ``predict``, ``recommend``,
    ``verify`` and the lookup get their printed speed. ``knobs``: the speed ratio of the knobs
    the model does not cover and their sources (:func:`sam2tune.tune.space.answer_speed`), applied
    to the step and end-to-end time; the prediction's ``provenance`` is what it rests on, the
    GPU and implementation caveats included."""
    sm = model if model is not None else this_machine(load_speed_model(), kind)
    sp = predict_speed(w, c, sm, kind)
    ratio, sources = knobs if knobs is not None else (1.0, [])
    if sp is not None and ratio != 1.0:  # knobs the model does not cover, as their ratios
        sp = dataclasses.replace(sp, step_s=sp.step_s / ratio, fps=sp.fps * ratio,
                                 end_to_end_s=sp.end_to_end_s / ratio)
    text, rests = speed_note(sp, sm, kind, w.num_frames, gpu)
    if sp is not None:
        rests += "".join(f"; {s}" for s in sources)
        if c.impl != "sam2":
            rests += (f"; impl={c.impl}: the speed model has no {c.impl} runs, this is Meta's "
                      "sam2's figure for the same knobs (measured on the CPU, 256 px, 2 objects: "
                      "transformers 1.94 / 1.80 fps vs sam2 2.13 / 2.44 at 24 / 48 frames, "
                      "results/implementations)")
        sp = dataclasses.replace(sp, provenance=rests)  # one provenance wherever it is shown
    return sp, text, rests

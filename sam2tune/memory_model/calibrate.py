"""Turn recorded runs into model inputs, fit the model, and measure its error where it cannot
flatter: on a held-out set drawn off the calibration grid and on one extrapolation test per axis
(fitted on a calibration subset that stops short of the test; see
:mod:`sam2tune.memory_model.design`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sam2tune.config.schema import RunConfig
from sam2tune.gpus import fit_headroom
from sam2tune.memory_model.memory import (
    Candidate,
    MemoryModel,
    Prediction,
    Workload,
    activation_features,
    predict,
    workload_axes,
)
from sam2tune.memory_model.workload import recorded_workload
from sam2tune.paths import report_path
from sam2tune.results import load_results
from sam2tune.video.synthetic import entry_frame

__all__ = [
    "workload_of",
    "candidate_of",
    "run_inputs",
    "CalibrationRow",
    "fit",
    "fit_and_evaluate",
    "region_of",
]


def candidate_of(src: Any) -> Candidate:
    """Knobs of a row (dict) or a RunConfig's ``knobs`` (see :meth:`Candidate.from_knobs`)."""
    return Candidate.from_knobs(src)


def _synthetic_prompts(n: int, k: int, every: int) -> list[list[int]]:
    """Prompted frames per object in the synthetic generator's scenario (objects visible from
    frame 0, the last of 2+ entering at the generator's ``entry_frame``)."""
    firsts = [0] * (k - 1) + [entry_frame(n) if k >= 2 else 0]
    return [list(range(f, n, every)) if every else [f] for f in firsts]


def workload_of(cfg: RunConfig, num_frames: int | None = None) -> Workload:
    """The model's workload for a run config (synthetic scenario from the generator's rules)."""
    n = num_frames or cfg.video.num_frames or 1
    k = cfg.video.num_objects
    conds = _synthetic_prompts(n, k, cfg.scenario.reannotate_every)
    return Workload(
        model=cfg.model.name,
        image_size=cfg.model.image_size,
        num_frames=n,
        num_objects=k,
        num_cond_frames=len({f for fs in conds for f in fs}),
        object_frames=sum(n - fs[0] for fs in conds),
        weights_bytes=cfg.model.weights_bytes,
        video_height=cfg.video.height,
        video_width=cfg.video.width,
        cond_frames=conds,
    )


@dataclass(frozen=True)
class CalibrationRow:
    """One ok run as the memory model's fit and evaluation see it: the workload and knobs it
    ran, and its targets. Sizes are integer-valued bytes."""

    run_id: str
    config_hash: str
    device_kind: str  #: cuda when the run measured CUDA's allocator, else cpu
    device_name: str | None
    weights: str  #: random-init or sha256:<checkpoint>
    workload: Workload  #: with the run's exact prompted frames
    candidate: Candidate
    #: the step's activations: CUDA's measured step peak, else the tracked transient (bytes)
    activation_bytes: float
    cached_features_bytes: float
    peak_host_rss_bytes: float
    #: what the device prediction is checked against: CUDA max allocated, else the estimate
    device_target: float
    cuda_max_reserved_bytes: float | None
    cuda_max_allocated_bytes: float | None
    cuda_context_bytes: float | None  #: total - free at the run's start (CUDA)
    #: allocated beyond weights, census, the measured step peak and the bank copy (CUDA)
    cuda_fixed_bytes: float | None
    #: NVML's per-process figure minus reserved: context, kernels, library handles (CUDA)
    cuda_outside_allocator_bytes: float | None
    baseline_rss_bytes: float | None
    baseline_resident_bytes: float | None


def run_inputs(results_dir: str | Path) -> list[CalibrationRow]:
    """Every ok run as model inputs and targets (exact prompted frames from its report)."""
    try:
        df = load_results(results_dir)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None
    out: list[CalibrationRow] = []
    if df.empty:
        return out
    for r in df[df["status"] == "ok"].to_dict("records"):
        rep = json.loads(report_path(results_dir, r["run_id"]).read_text())
        w = recorded_workload(r, rep)
        cuda = r["device"] == "cuda" and r.get("cuda_max_allocated_bytes")
        est = rep.get("estimate", {})
        env = rep.get("environment") or {}
        fixed = None
        if cuda:  # what the allocator held beyond weights, census, measured step peak and copy
            fixed = (
                r["cuda_max_allocated_bytes"]
                - sum(
                    int(est.get(t) or 0)
                    for t in ("weights_bytes", "resident_max_bytes", "cuda_step_peak_bytes")
                )
                - int(est.get("bank_copy_bytes") or 0)
            )
        out.append(
            CalibrationRow(
                run_id=r["run_id"],
                config_hash=r["config_hash"],
                device_kind="cuda" if cuda else "cpu",
                device_name=r["device_name"],
                weights=r["weights"],
                workload=w,
                candidate=candidate_of(r),
                activation_bytes=float(
                    est.get("cuda_step_peak_bytes") if cuda else r["activation_peak_bytes"]
                ),
                cached_features_bytes=float(r["cached_features_bytes"]),
                peak_host_rss_bytes=float(r["peak_host_rss_bytes"]),
                device_target=float(
                    r["cuda_max_allocated_bytes"] if cuda else r["est_device_peak_bytes"]
                ),
                cuda_max_reserved_bytes=r.get("cuda_max_reserved_bytes"),
                cuda_max_allocated_bytes=r.get("cuda_max_allocated_bytes") if cuda else None,
                cuda_context_bytes=env.get("cuda_total_bytes", 0)
                - env.get("cuda_free_at_start_bytes", 0)
                if cuda
                else None,
                cuda_fixed_bytes=fixed,
                # device memory of the process outside PyTorch's allocator: the context, loaded
                # kernels and library handles (NVML's per-process figure minus reserved)
                cuda_outside_allocator_bytes=r["nvml_peak_process_bytes"]
                - r["cuda_max_reserved_bytes"]
                if cuda and r.get("nvml_peak_process_bytes") and r.get("cuda_max_reserved_bytes")
                else None,
                baseline_rss_bytes=env.get("baseline_rss_bytes"),
                baseline_resident_bytes=env.get("baseline_resident_bytes"),
            )
        )
    return out


def _nnls(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares with non-negative coefficients (active set: drop the most negative)."""
    active = [j for j in range(A.shape[1]) if np.any(A[:, j])]
    coef = np.zeros(A.shape[1])
    while active:
        sc = np.abs(A[:, active]).max(axis=0)
        c, *_ = np.linalg.lstsq(A[:, active] / sc, b, rcond=None)
        c = c / sc
        if (c >= 0).all():
            coef[active] = c
            break
        active.pop(int(np.argmin(c)))
    return coef


def _rel_lstsq(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising the relative error of ``X @ coef`` against ``y``."""
    return _nnls(X / y[:, None], np.ones_like(y))


def _fit_activations(rows: list[CalibrationRow]) -> dict[str, float]:
    """a_enc, a_q, a_out: the max of two phases (the memory tokens' bytes fixed by SAM 2's code),
    fitted by alternating assignment
    (each run to the phase the current coefficients say is larger)."""
    f32 = [r for r in rows if r.candidate.dtype == "float32"] or rows
    F = [activation_features(r.workload, r.candidate) for r in f32]
    enc = np.array([f["enc"] for f in F])
    mem = np.array([[f["q"], f["out"], f["bq"], f["btok"]] for f in F])
    fixed = np.array([f["tok_bytes"] for f in F])  # sized from SAM 2's code, not fitted
    has_mem = fixed > 0
    y = np.array([r.activation_bytes for r in f32], float)
    a_enc = float(np.percentile(y / enc, 20))
    is_enc = (y <= 1.03 * a_enc * enc) | ~has_mem
    m = np.zeros(4)
    for _ in range(50):
        if is_enc.any():
            a_enc = float(_rel_lstsq(enc[is_enc, None], y[is_enc])[0])
        sel = ~is_enc
        if sel.sum() >= 2:
            m = _nnls(mem[sel] / y[sel, None], (y[sel] - fixed[sel]) / y[sel])
        new = (a_enc * enc >= mem @ m + fixed) | ~has_mem
        if (new == is_enc).all():
            break
        is_enc = new
    k = {
        "a_enc": a_enc,
        "a_q": float(m[0]),
        "a_out": float(m[1]),
        "a_bq": float(m[2]),
        "a_btok": float(m[3]),
    }
    bf = [r for r in rows if r.candidate.dtype == "bfloat16"]
    if bf:
        # bf16 = max(f_enc x fp32 encoder phase, f_mem x fp32 attention phase): the two factors
        # by least relative squares on a grid (the phases scale differently under autocast)
        from sam2tune.memory_model.memory import activations

        phases = [
            activations(r.workload, dataclasses.replace(r.candidate, dtype="float32"), k)
            for r in bf
        ]
        yb = [r.activation_bytes for r in bf]
        k["bf16_enc"], k["bf16_mem"] = _phase_factors(phases, yb, np.arange(0.4, 1.6, 0.005))
    return k


def _phase_factors(
    phases: list[dict[str, int]], y: list[float], grid: np.ndarray
) -> tuple[float, float]:
    """(f_enc, f_mem) minimising the relative squared error of max(f_enc x encoder phase, f_mem x
    attention phase) against ``y``, on ``grid``. Ties (a phase no run was bound by): the factor
    closest to the other one."""
    ph = np.array([[a["image_encoder"], a["memory_attention"]] for a in phases], float)
    yy = np.asarray(y, float)
    fe, fm = np.meshgrid(grid, grid, indexing="ij")
    pred = np.maximum(fe[..., None] * ph[:, 0], fm[..., None] * ph[:, 1])
    loss = (((pred - yy) / yy) ** 2).sum(axis=-1) + 1e-9 * (fe - fm) ** 2
    i, j = np.unravel_index(np.argmin(loss), loss.shape)
    return float(grid[i]), float(grid[j])


def _fit_impl_ratio(rows: list[CalibrationRow], k: dict[str, float]) -> None:
    """transformers' step activations as ratios to sam2's two phases (``hf_enc``, ``hf_mem``),
    by least relative squares on a grid, as the bf16 factors are fitted: its layers allocate
    differently, but each phase scales with the same quantities."""
    from sam2tune.memory_model.memory import activations

    phases = [
        activations(r.workload, dataclasses.replace(r.candidate, impl="sam2"), k)
        for r in rows
    ]
    y = [r.activation_bytes for r in rows]
    k["hf_enc"], k["hf_mem"] = _phase_factors(phases, y, np.arange(0.3, 3.0, 0.005))


def region_of(rows: list[CalibrationRow]) -> dict[str, Any]:
    """The calibrated region: numeric ranges and seen values per trust-region axis."""
    axes = [workload_axes(r.workload, r.candidate) for r in rows]
    region: dict[str, Any] = {}
    for name in axes[0]:
        vals = [a[name] for a in axes]
        if isinstance(vals[0], bool) or isinstance(vals[0], str):
            region[name] = sorted(set(vals), key=str)
        else:
            region[name] = {"min": min(vals), "max": max(vals)}
    # the fitted terms' joint axes: a model's largest size and most objects may never have
    # run together (tiny at 1024 px, large at 384 px only: large at 1024 px is no axis's edge)
    region["joint"] = sorted(
        {(a["model"], a["image_size"], a["num_objects"]) for a in axes}, key=str
    )
    return region


def _baseline(
    rows: list[CalibrationRow], device_kind: str, baseline: int | None, resident: int | None
) -> tuple[int, int, str]:
    """(peak, resident, source) of the run process's host baseline on the runs' machine."""
    if baseline is not None:
        return baseline, baseline if resident is None else resident, "given"
    if all(r.baseline_rss_bytes for r in rows):
        # each run recorded its own baseline: the machine the runs ran on, wherever we fit
        peak = int(np.median([r.baseline_rss_bytes for r in rows]))
        now = int(
            np.median([r.baseline_resident_bytes or r.baseline_rss_bytes for r in rows])
        )
        return peak, now, "median of the runs' recorded baselines"
    from sam2tune.memory_model.baseline import host_baseline as measure

    base = measure(device_kind)
    peak = int(base["rss_bytes"])
    return peak, int(base.get("resident_bytes") or peak), "measured on the fitting machine"


def _fit_host(
    rows: list[CalibrationRow], k: dict[str, float], device_kind: str, base: int, resident: int
) -> None:
    """The host terms beyond the baseline (``h_0``, ``h_act`` or ``h_w``, ``h_px``) in ``k``."""
    k["h_0"], k["h_act"], k["h_w"], k["h_px"] = 0.0, 0.0, 0.0, 0.0
    m = MemoryModel({device_kind: k})
    X, resid = [], []
    for r in rows:
        p = predict(r.workload, r.candidate, m, device_kind, base, resident)
        S = r.candidate.image_size or r.workload.image_size
        # CPU: activations live in host RAM; CUDA: the weights are built on the host first
        w = r.workload
        share = p.activation_phases["peak"] if device_kind == "cpu" else w.weights_bytes
        X.append([share, S * S])
        resid.append(r.peak_host_rss_bytes - p.host_peak_bytes)
    Xa, ra = np.array(X, float), np.array(resid, float)
    yy = np.array([r.peak_host_rss_bytes for r in rows], float)
    # the run process beyond the import baseline: a constant, a share (above) and a per-pixel
    # part (relative least squares, non-negative)
    A = np.column_stack([np.ones(len(rows)), Xa]) / yy[:, None]
    c = _nnls(A, ra / yy)
    k["h_0"], k["h_px"] = float(c[0]), float(c[2])
    k["h_act" if device_kind == "cpu" else "h_w"] = float(c[1])


def _cuda_allocator(rows: list[CalibrationRow], info: dict[str, Any]) -> None:
    """The CUDA process's memory outside the allocator and the reserved:allocated headroom."""
    ctx = [r.cuda_context_bytes for r in rows if r.cuda_context_bytes]
    rr = [
        r.cuda_max_reserved_bytes / r.device_target
        for r in rows
        if r.cuda_max_reserved_bytes and r.device_target
    ]
    outside = [r.cuda_outside_allocator_bytes for r in rows]
    if all(outside):
        # what the process holds beyond the allocator at its peak (kernels loaded lazily
        # after the start included): the largest seen
        info["cuda_context_bytes"] = int(max(float(x or 0) for x in outside))
        info["cuda_context_source"] = "NVML process peak - allocator reserved (max over runs)"
    elif ctx:
        # total - free at a run's start: its own context plus whatever other processes held
        # (calibrate jobs>1 shares the GPU); others only add, so the minimum is the context
        info["cuda_context_bytes"] = int(np.min(ctx))
        info["cuda_context_source"] = "total - free at the runs' start (min over runs)"
    if rr:
        info["cuda_reserved_over_allocated"] = float(np.max(rr))
    pairs = [
        (int(r.cuda_max_allocated_bytes), int(r.cuda_max_reserved_bytes))
        for r in rows
        if r.cuda_max_allocated_bytes and r.cuda_max_reserved_bytes
    ]
    if pairs:  # the one usable-memory rule's headroom (sam2tune.gpus)
        head = fit_headroom(pairs, f"fitted on {len(pairs)} CUDA runs (envelope)")
        info["cuda_headroom"] = dataclasses.asdict(head)


def _fit_info(
    rows: list[CalibrationRow], meta: list[CalibrationRow], hf: list[CalibrationRow],
    k: dict[str, float], device_kind: str, host_baseline: int, host_resident: int,
    baseline_source: str,
) -> dict[str, Any]:
    """What a fit was made on (stored as the model file's calibration of ``device_kind``)."""
    return {
        "device_kind": device_kind,
        "runs": len(meta),
        "run_ids": [r.run_id for r in meta],
        "host_baseline_bytes": int(host_baseline),
        "host_resident_bytes": int(host_resident),
        "host_baseline_source": baseline_source,
        "region": region_of(rows),
        "impl_ratio": {
            "transformers": {
                "runs": len(hf),
                "run_ids": [r.run_id for r in hf],
                "hf_enc": k["hf_enc"],
                "hf_mem": k["hf_mem"],
            }
            if hf
            else "no transformers runs: its activations are predicted as sam2's (ratio 1.0)"
        },
        "summary": {
            "runs": len(meta),
            "devices": sorted({r.device_name or "?" for r in rows}),
            "weights": sorted({r.weights for r in rows}),
            "target": "cuda_max_allocated_bytes"
            if device_kind == "cuda"
            else "est_device_peak_bytes (census+tracked estimate)",
        },
    }


def fit(
    rows: list[CalibrationRow],
    device_kind: str,
    host_baseline: int | None = None,
    host_resident: int | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Coefficients from recorded runs of one device kind, and what they were fitted on.

    Args:
        host_baseline, host_resident: the run process's baseline RSS (peak, resident) on the
            machine the runs were recorded on (default: the runs' own records, else measured
            here).
    """
    if not rows:
        raise ValueError(f"memory model: no ok runs on {device_kind} to fit")
    meta = [r for r in rows if r.candidate.impl == "sam2"]
    if not meta:
        raise ValueError(f"memory model: no ok impl=sam2 runs on {device_kind} to fit")
    k = _fit_activations(meta)
    k["c_feat"] = float(
        np.median(
            [
                r.cached_features_bytes
                / ((r.candidate.image_size or r.workload.image_size) ** 2)
                for r in meta
            ]
        )
    )
    hf = [r for r in rows if r.candidate.impl == "transformers"]
    if hf:
        _fit_impl_ratio(hf, k)
    host_baseline, host_resident, baseline_source = _baseline(
        meta, device_kind, host_baseline, host_resident
    )
    if device_kind == "cuda":
        # allocator-visible bytes no term names (library workspaces and the like): a constant,
        # measured per run from the census and the measured step peak, not fitted jointly
        fixed = [r.cuda_fixed_bytes for r in rows if r.cuda_fixed_bytes is not None]
        k["d_0"] = float(np.median(fixed)) if fixed else 0.0
    _fit_host(meta, k, device_kind, host_baseline, host_resident)
    info = _fit_info(rows, meta, hf, k, device_kind, host_baseline, host_resident,
                     baseline_source)
    if device_kind == "cuda":
        _cuda_allocator(rows, info)
    return k, info


#: extrapolation axis -> the calibration subset the fit may use
_SUBSETS = {
    "image_size": lambda r, v: (r.candidate.image_size or r.workload.image_size) <= v,
    "cond_frames": lambda r, v: r.workload.cond_per_object() <= v,
    "num_objects": lambda r, v: r.workload.num_objects <= v,
    "num_frames": lambda r, v: r.workload.num_frames <= v,
}


def _err_row(r: CalibrationRow, p: Prediction, axis: str, fitted_on: int) -> dict[str, Any]:
    w = r.workload
    return {
        "run_id": r.run_id,
        "axis": axis,
        "fitted_on_runs": fitted_on,
        "model": w.model,
        "image_size": w.image_size,
        "num_frames": w.num_frames,
        "num_objects": w.num_objects,
        "memory_frames": p.memory_read["frames"],
        "knobs": " ".join(r.candidate.overrides(w)[2:]) or "stock",
        "inside": p.trust["inside"],
        "device_pred": p.device_peak_bytes,
        "device_actual": r.device_target,
        "device_err": (p.device_peak_bytes - r.device_target) / r.device_target,
        "act_pred": p.terms["activations"],
        "act_actual": r.activation_bytes,
        "act_err": (p.terms["activations"] - r.activation_bytes) / r.activation_bytes,
        "host_pred": p.host_peak_bytes,
        "host_actual": r.peak_host_rss_bytes,
        "host_err": (p.host_peak_bytes - r.peak_host_rss_bytes) / r.peak_host_rss_bytes,
    }


def evaluate(
    calib: list[CalibrationRow],
    valid: list[CalibrationRow],
    axis_of: dict[str, tuple[str, dict[str, int]]],
    kind: str,
) -> pd.DataFrame:
    """Errors of the held-out runs: random ones against the fit on every calibration run,
    extrapolation ones against the fit on the subset their axis allows. The held-out runs ran
    on the calibration machine, so they are predicted with its baseline."""
    evals = []
    k, info = fit(calib, kind)
    base, resident = info["host_baseline_bytes"], info["host_resident_bytes"]
    full = MemoryModel({kind: k}, {kind: info})
    for r in valid:
        axis, fit_on = axis_of.get(r.config_hash, ("random", {}))
        m, n_fit = full, len(calib)
        if fit_on:
            ((name, v),) = fit_on.items()
            if name == "model_excluded":
                sub = [c for c in calib if c.workload.model != r.workload.model]
            else:
                sub = [c for c in calib if _SUBSETS[name](c, v)]
            ks, infos = fit(sub, kind, base, resident)
            m, n_fit = MemoryModel({kind: ks}, {kind: infos}), len(sub)
        p = predict(r.workload, r.candidate, m, kind, base, resident)
        evals.append(_err_row(r, p, axis, n_fit))
    return pd.DataFrame(evals)


def _axis_tags(seed: int = 0, device: str = "cpu") -> dict[str, tuple[str, dict[str, int]]]:
    """config_hash -> (axis, fit_on) for the validation design's points (run on ``device``)."""
    from sam2tune.config.schema import config_hash
    from sam2tune.config.store import compose_run
    from sam2tune.memory_model.design import validation_points

    tags = {}
    for pt in validation_points(seed):
        cfg = compose_run(pt.args() + [f"device={device}"])  # results_dir: not in the hash
        tags[config_hash(cfg)] = (pt.axis, pt.fit_on)
    return tags


def _dirs(d: str | Path | Sequence[str | Path] | None) -> list[Path]:
    if d is None:
        return []
    return [Path(d)] if isinstance(d, (str, Path)) else [Path(x) for x in d]


def fit_and_evaluate(
    results_dir: str | Path | Sequence[str | Path],
    validation_dir: str | Path | Sequence[str | Path] | None = None,
    seed: int = 0,
    impl_dir: str | Path | Sequence[str | Path] | None = None,
) -> tuple[MemoryModel, pd.DataFrame, dict[str, Any]]:
    """Fit per device kind on the runs of ``results_dir`` (one folder or several, e.g. a CPU and
    a CUDA calibration) and, with ``validation_dir``, measure the error on its runs (random
    held-out + extrapolation per axis).

    Args:
        impl_dir: runs of other implementations (``impl=transformers``): their activation ratios
            to sam2's are fitted beside Meta's coefficients.

    Returns:
        (model fitted on every calibration run, per-run errors, summary per kind and axis).
    """
    rows = [r for d in _dirs(results_dir) for r in run_inputs(d)]
    if not rows:
        raise ValueError(f"results_dir: no ok runs under {str(results_dir)!r} to fit")
    # other implementations' runs (impl_dir): only their own rows join, so Meta's coefficients
    # stay fitted on the calibration set alone
    rows += [
        r for d in _dirs(impl_dir) for r in run_inputs(d) if r.candidate.impl != "sam2"
    ]
    valid = [r for d in _dirs(validation_dir) for r in run_inputs(d)]
    model = MemoryModel()
    frames = []
    summary: dict[str, Any] = {}
    for kind in sorted({r.device_kind for r in rows}):
        cal = [r for r in rows if r.device_kind == kind]
        k, info = fit(cal, kind)
        model.coeffs[kind], model.calibration[kind] = k, info
        val = [r for r in valid if r.device_kind == kind]
        if val:
            tags = _axis_tags(seed, kind)
            ev = evaluate(cal, val, tags, kind).assign(device_kind=kind)
            frames.append(ev)
            summary[kind] = summarize(ev)
    ev = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return model, ev, summary


def summarize(ev: pd.DataFrame) -> dict[str, Any]:
    """Median and max absolute relative error per axis and over all held-out runs."""
    out: dict[str, Any] = {}
    groups = [("all", ev)] + list(ev.groupby("axis"))
    for name, g in groups:
        out[str(name)] = {
            "runs": len(g),
            "device_median": float(g["device_err"].abs().median()),
            "device_max": float(g["device_err"].abs().max()),
            "host_median": float(g["host_err"].abs().median()),
            "host_max": float(g["host_err"].abs().max()),
            # the one device term no exact arithmetic shares with the estimate it is checked on
            "activations_median": float(g["act_err"].abs().median()),
            "activations_max": float(g["act_err"].abs().max()),
        }
    return out

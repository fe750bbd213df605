"""Turn recorded runs into model inputs, fit the model, and measure its error on held-out runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sam2tune.config.schema import RunConfig
from sam2tune.model.memory import Candidate, MemoryModel, Workload, fit, predict, rel_error
from sam2tune.results import load_results
from sam2tune.video.synthetic import entry_frame

__all__ = ["workload_of", "candidate_of", "run_inputs", "fit_and_evaluate"]


def candidate_of(src: Any) -> Candidate:
    """Knobs of a row (dict) or a RunConfig's ``knobs``."""
    get = src.get if isinstance(src, dict) else (lambda k, d=None: getattr(src, k, d))
    return Candidate(
        offload_video_to_cpu=bool(get("offload_video_to_cpu", False)),
        offload_state_to_cpu=bool(get("offload_state_to_cpu", False)),
        max_cond_frames_in_attn=int(get("max_cond_frames_in_attn", -1)),
        dtype=str(get("dtype", "float32")),
        predictor=str(get("predictor", "per_object")),
        strategy=str(get("strategy", "stock") or "stock"),
        segment_frames=int(get("segment_frames", 0) or 0),
    )


def _synthetic_prompt_frames(n: int, k: int, every: int) -> tuple[set[int], int]:
    """Prompted frames and object-frames of the synthetic generator's scenario (objects visible
    from frame 0, the last of 2+ entering at the generator's ``entry_frame``)."""
    firsts = [0] * (k - 1) + [entry_frame(n) if k >= 2 else 0]
    frames: set[int] = set()
    for f in firsts:
        frames.update(range(f, n, every) if every else [f])
    return frames, sum(n - f for f in firsts)


def workload_of(cfg: RunConfig) -> Workload:
    """The model's workload for a run config (synthetic scenario from the generator's rules)."""
    n = cfg.video.num_frames or 1
    k = cfg.video.num_objects
    frames, obj_frames = _synthetic_prompt_frames(n, k, cfg.scenario.reannotate_every)
    return Workload(
        cfg.model.name,
        cfg.model.image_size,
        n,
        k,
        len(frames),
        obj_frames,
        cfg.model.weights_bytes,
    )


def run_inputs(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every ok run as model inputs and targets (exact object-frames from its prompts)."""
    df = load_results(results_dir)
    out = []
    for r in df[df["status"] == "ok"].to_dict("records"):
        rep = json.loads((Path(results_dir) / "runs" / r["run_id"] / "report.json").read_text())
        n = int(r["num_frames"])
        first: dict[int, int] = {}
        for p in rep["prompts"]:
            first[p["obj_id"]] = min(first.get(p["obj_id"], p["frame"]), p["frame"])
        if r["predictor"] == "legacy_batched":
            obj_frames = len(first) * (n - min(first.values()))
        else:
            obj_frames = sum(n - f for f in first.values())
        w = Workload(
            r["model"],
            int(r["image_size"]),
            n,
            int(r["num_objects"]),
            int(r["num_cond_frames"]),
            obj_frames,
            int(r["weights_bytes"]),
        )
        cuda = r["device"] == "cuda" and r.get("cuda_max_allocated_bytes")
        est = rep.get("estimate", {})
        out.append(
            {
                "run_id": r["run_id"],
                "device_kind": "cuda" if cuda else "cpu",
                "device_name": r["device_name"],
                "weights": r["weights"],
                "workload": w,
                "candidate": candidate_of(r),
                "activation_bytes": float(
                    est.get("cuda_step_peak_bytes") if cuda else r["activation_peak_bytes"]
                ),
                "cached_features_bytes": float(r["cached_features_bytes"]),
                "peak_host_rss_bytes": float(r["peak_host_rss_bytes"]),
                "device_target": float(
                    r["cuda_max_allocated_bytes"] if cuda else r["est_device_peak_bytes"]
                ),
            }
        )
    return out


def fit_and_evaluate(results_dir: str | Path) -> tuple[MemoryModel, pd.DataFrame, dict[str, Any]]:
    """Fit per device kind on the shorter videos, evaluate on the longest (held out), then refit
    on every run for the returned model.

    Returns:
        (model fitted on all runs, per-run held-out errors, summary).
    """
    rows = run_inputs(results_dir)
    if not rows:
        raise ValueError(f"results_dir: no ok runs under {str(results_dir)!r} to fit")
    model = MemoryModel()
    evals = []
    summary: dict[str, Any] = {}
    for kind in sorted({r["device_kind"] for r in rows}):
        rs = [r for r in rows if r["device_kind"] == kind]
        longest = max(r["workload"].num_frames for r in rs)
        train = [r for r in rs if r["workload"].num_frames < longest]
        test = [r for r in rs if r["workload"].num_frames == longest]
        if train and test:
            k, info = fit(train, kind)
            m = MemoryModel({kind: k}, {kind: info})
            for r in test:
                p = predict(r["workload"], r["candidate"], m, kind)
                evals.append(
                    {
                        "run_id": r["run_id"],
                        "device_kind": kind,
                        "num_frames": r["workload"].num_frames,
                        "frames_vs_fitted": r["workload"].num_frames / info["max_frames"],
                        "device_pred": p["device_peak_bytes"],
                        "device_actual": r["device_target"],
                        "device_rel_err": rel_error(p["device_peak_bytes"], r["device_target"]),
                        "host_pred": p["host_peak_bytes"],
                        "host_actual": r["peak_host_rss_bytes"],
                        "host_rel_err": rel_error(p["host_peak_bytes"], r["peak_host_rss_bytes"]),
                    }
                )
        k, info = fit(rs, kind)
        model.coeffs[kind] = k
        model.calibration[kind] = info
    ev = pd.DataFrame(evals)
    if not ev.empty:
        for kind, g in ev.groupby("device_kind"):
            summary[kind] = {
                "held_out_runs": len(g),
                "frames_vs_fitted": float(g["frames_vs_fitted"].max()),
                "device_median_rel_err": float(np.median(g["device_rel_err"])),
                "device_max_rel_err": float(g["device_rel_err"].max()),
                "host_median_rel_err": float(np.median(g["host_rel_err"])),
                "host_max_rel_err": float(g["host_rel_err"].max()),
            }
    return model, ev, summary

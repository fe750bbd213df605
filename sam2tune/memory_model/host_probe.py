"""This machine's host terms, measured: short real SAM 2 runs whose peak RSS the memory model's
fitted host terms are solved from on the machine that predicts.

The calibration's fitted host term (``allocator``: ``h_0 + h_act x activations + h_w x weights
+ h_px x S^2``, what the run process holds beyond its import baseline and the terms SAM 2's code
sizes) is what does not transfer between machines: the allocator, the BLAS / oneDNN workspaces
and the libraries' caches differ from one CPU kind to the next (an Intel Xeon's held-out host
predictions were +18 to +22 % over the measured peak with the AMD EPYC calibration's terms). So
the host-baseline probe (:mod:`sam2tune.memory_model.baseline`, CPU) also runs
:data:`PROBE_SIZES`: one short ``sam2tune run`` each (sam2.1_tiny, random-init, synthetic
video, :data:`PROBE_FRAMES` frames, 1 object, stock knobs) through the project's own run
machinery (``sam2tune run`` in a subprocess: the isolated run process, its allocator settings
and its peak-RSS measure), into a temporary results folder. What it keeps is
each run's workload, measured ``peak_host_rss_bytes`` and per-frame step times (``steps``, for the
speed model's local scale, :mod:`sam2tune.speed_model.local`); the memory model solves its
local terms from them (:func:`solve_allocator`, applied in
:func:`sam2tune.memory_model.terms.predict`), so the solve always uses the very coefficients
that predict.

Two unknowns, a local constant and a local per-pixel part, solved by least squares over the
probe's three sizes (two would do; the third, 768 px, puts the per-pixel part's reach closer to
the 1024 px most answers are asked at and measures the speed scale's growth,
:mod:`sam2tune.speed_model.local`). The calibration's shares ``h_act`` (activations) and ``h_w``
(weights) are kept as they are and not re-solved: on the probe's runs (one model, one length,
one object) the activation peak grows with S^2 like the per-pixel part and the weights do not
change, so they cannot tell them apart from ``h_px`` and ``h_0``; the fit on the calibration set,
which varies models, lengths and objects, is what separates them (the shipped CPU fit puts both
at 0).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sam2tune.memory_model.workload import recorded_workload

__all__ = ["PROBE_SIZES", "PROBE_FRAMES", "measure_local_runs", "solve_allocator"]

#: the probe's input resolutions (px): the calibration's smallest size, a middle one and a large
#: one (768 px: the speed scale's growth measured over a ~10x range of step times, not inferred
#: from two close points; about 30 s more of the probe on a 2-core CPU)
PROBE_SIZES = (256, 512, 768)
#: frames per probe run: the host peak comes from the first propagated steps; the speed model's
#: local scale (:mod:`sam2tune.speed_model.local`) needs steady steps past the two warm-up frames
PROBE_FRAMES = 8


def _probe_cmd(results_dir: str) -> list[str]:
    """``sam2tune run -m model.image_size=<sizes> ...``: the probe's runs, one after the other
    in one sweep (a subprocess: the memory model sits below the run machinery)."""
    return [
        sys.executable,
        "-m",
        "sam2tune",
        "run",
        "-m",
        "device=cpu",
        "model=sam2.1_tiny",
        "model.image_size=" + ",".join(str(s) for s in PROBE_SIZES),
        f"video.num_frames={PROBE_FRAMES}",
        "video.num_objects=1",
        "probe.reference=false",
        "limits.timeout_s=600",
        f"results_dir={results_dir}",
    ]


def _workload_of_report(rep: dict[str, Any]) -> dict[str, Any]:
    """The run's workload (as :class:`~sam2tune.memory_model.workload.Workload` fields) from its
    report: its exact prompted frames and the video's own size."""
    return dataclasses.asdict(recorded_workload(rep["row"], rep))


def measure_local_runs() -> dict[str, Any]:
    """Run the probe's short real SAM 2 runs (:data:`PROBE_SIZES`, one after the other) and
    report each run's workload and measured host peak (``runs``), and the probe's wall time
    (``seconds``). Raises ``RuntimeError`` when a probe run does not finish ok."""
    t0 = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory(prefix="sam2tune-host-probe-") as tmp:
        p = subprocess.run(_probe_cmd(tmp), capture_output=True, text=True, timeout=1800)
        reports = [json.loads(f.read_text()) for f in Path(tmp).glob("runs/*/report.json")]
        by_size = {int(r["row"]["image_size"]): r for r in reports}
        for s in PROBE_SIZES:
            rep = by_size.get(s, {})
            row = rep.get("row", {})
            if row.get("status") != "ok" or not row.get("peak_host_rss_bytes"):
                tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
                why = f"ended {row['status']}: {row['error']}" if row else f"no record ({tail[0]})"
                raise RuntimeError(f"host probe: the {s} px run {why}")
            env = rep.get("environment") or {}
            runs.append(
                {
                    "image_size": s,
                    "workload": _workload_of_report(rep),
                    "peak_host_rss_bytes": int(row["peak_host_rss_bytes"]),
                    "run_s": float(rep["wall_s"]),
                    "run_id": row["run_id"],
                    # the per-frame step times, kept raw for the speed model's local scale
                    # [frame, objects, step_s, tracked, cpu_s]
                    "steps": [
                        [int(t["frame"]), int(t.get("objects") or 0), float(t["step_s"]),
                         bool(t.get("tracked")), t.get("cpu_s")]
                        for t in rep.get("timeline") or [] if t.get("step_s")
                    ],
                    "threads": env.get("torch_threads"),
                    # the run process's own baseline (before SAM 2 allocates): the local terms
                    # are solved above it (:func:`sam2tune.memory_model.terms._local_coeffs`)
                    "baseline_rss_bytes": env.get("baseline_rss_bytes"),
                    "baseline_resident_bytes": env.get("baseline_resident_bytes"),
                    "prompted": sorted({int(q["frame"]) for q in rep.get("prompts") or []}),
                    "figure": "measured on this machine (sam2tune run, random-init)",
                }
            )
    return {"runs": runs, "seconds": time.perf_counter() - t0}


def solve_allocator(points: list[tuple[int, float]]) -> tuple[float, float]:
    """``(h_0, h_px)``: the local constant and per-pixel part of the host term from
    ``(S, residual bytes)`` points, residual = measured peak - every other host term the model
    gives for that run. Two points: the exact solve; more: least squares. A per-pixel part
    below zero (sizes whose residuals differ by less than their noise) is taken as 0 and the
    constant as the residuals' mean."""
    if not points:
        raise ValueError("solve_allocator: no probe points")
    xs = [float(s) * s for s, _ in points]
    ys = [float(r) for _, r in points]
    n = len(points)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=False)) / sxx if sxx else 0.0
    if slope < 0:
        slope = 0.0
    return my - slope * mx, slope

"""Memory-model error on held-out real runs: fitted on the shorter videos of a results table,
tested on its longest (4x the fitted length for the `sweep_calibration` preset). Goal: median
<= 5 %, max <= 10 % for device_peak_bytes (CUDA measured where the runs had a GPU, else the CPU
estimate) and host_peak_bytes (measured RSS).

    .venv/bin/sam2tune run -m experiment=sweep_calibration results_dir=results/cpu-calibration
    .venv/bin/python experiments/bench_model_error.py results/cpu-calibration
"""

from __future__ import annotations

import sys

from sam2tune.model.calibrate import fit_and_evaluate
from sam2tune.units import fmt_bytes


def main() -> None:
    results = sys.argv[1] if len(sys.argv) > 1 else "results/cpu-calibration"
    model, ev, summary = fit_and_evaluate(results)
    for kind, info in model.calibration.items():
        print(
            f"[{kind}] {info['runs']} runs, {', '.join(info['devices'])}, weights "
            f"{', '.join(info['weights'])}, image sizes {info['image_sizes']}, target {info['target']}"
        )
    for r in ev.itertuples():
        print(
            f"  held out {r.run_id}: {r.num_frames} frames ({r.frames_vs_fitted:.0f}x fitted) "
            f"device {fmt_bytes(r.device_pred)} pred vs {fmt_bytes(r.device_actual)} "
            f"({r.device_rel_err:.2%}); host {fmt_bytes(r.host_pred)} vs {fmt_bytes(r.host_actual)} "
            f"({r.host_rel_err:.2%})"
        )
    for kind, s in summary.items():
        print(
            f"[{kind}] held-out relative error over {s['held_out_runs']} runs up to "
            f"{s['frames_vs_fitted']:.0f}x the fitted length: device median "
            f"{s['device_median_rel_err']:.2%} / max {s['device_max_rel_err']:.2%} (goal 5 % / 10 %); "
            f"host median {s['host_median_rel_err']:.2%} / max {s['host_max_rel_err']:.2%}"
        )


if __name__ == "__main__":
    main()

"""Memory-model error where it cannot flatter: the model fitted on the designed calibration set,
tested on a held-out set drawn at random off the calibration grid, and one extrapolation test per
axis fitted on the calibration subset that stops short of it (<= 512 px -> 1024 px, <= 4
conditioning frames -> >= 20, <= 3 objects -> 8, <= 48 frames -> 200, a model size the fit never
saw). Device figure: the run's census+tracked estimate on the CPU, CUDA max_memory_allocated on a
GPU; host figure: the run process's measured peak RSS, on this machine (the host baseline is
measured here). Goal: device median <= 3 %, max <= 8 %; host median <= 5 %, max <= 10 %.

    sam2tune calibrate design=calibration results_dir=results/cpu-calibration   # ~30 min
    sam2tune calibrate design=validation results_dir=results/cpu-validation     # ~20 min
    .venv/bin/python experiments/bench_model_error.py results/cpu-calibration \
results/cpu-validation
"""

from __future__ import annotations

import sys

from sam2tune.memory_model.calibrate import fit_and_evaluate
from sam2tune.tune.text import print_errors

GOAL = {"device_median": 0.03, "device_max": 0.08, "host_median": 0.05, "host_max": 0.10}


def main() -> int:
    calib = sys.argv[1] if len(sys.argv) > 1 else "results/cpu-calibration"
    valid = sys.argv[2] if len(sys.argv) > 2 else "results/cpu-validation"
    model, ev, summary = fit_and_evaluate(calib, valid)
    for kind, info in model.calibration.items():
        s = info["summary"]
        print(
            f"[{kind}] fitted on {info['runs']} runs ({', '.join(s['devices'])}; weights "
            f"{', '.join(s['weights'])}); device target {s['target']}; host baseline "
            f"{info['host_baseline_bytes'] / 2**30:.3f} GiB measured on this machine"
        )
    if ev.empty:
        print("no validation runs")
        return 1
    print_errors(ev, summary)
    ok = True
    for kind, axes in summary.items():
        a = axes["all"]
        worst = {k: max(s[k] for s in axes.values()) for k in GOAL}
        print(
            f"[{kind}] all {a['runs']} held-out runs: device median {a['device_median']:.2%} / "
            f"max {worst['device_max']:.2%} (goal 3 % / 8 %); host median "
            f"{a['host_median']:.2%} / max {worst['host_max']:.2%} (goal 5 % / 10 %); the "
            f"fitted activation term alone (no exact term shared with the estimate): median "
            f"{a['activations_median']:.2%} / max {a['activations_max']:.2%}"
        )
        ok &= all(a[k] <= v for k, v in GOAL.items() if k.endswith("median"))
        ok &= all(worst[k] <= v for k, v in GOAL.items() if k.endswith("max"))
    print("goal met" if ok else "goal NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

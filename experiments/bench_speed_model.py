"""The speed model's held-out error per axis, on every device kind with a calibration.

Fits on each calibration set (its runs' steady step times, warm-up and prompted frames left out)
and predicts the validation design's runs it never saw: seeded random points off the grid, and one
extrapolation per axis fitted on the subset that stops short of it (the memory model's discipline).
Prints median / max absolute relative error of the steady step time per axis.

    python experiments/bench_speed_model.py                     # CPU and H200 sets, print only
    python experiments/bench_speed_model.py --write conf/speed_model.json
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from sam2tune.speed_model.fit import fit_and_evaluate
from sam2tune.speed_model.model import SpeedModel

SETS = [  # calibration, held-out, object-batch runs (calibration/ + validation/) or None
    ("results/cpu-calibration", "results/cpu-validation", "results/object-batch/speed"),
    ("results/gpu-nvidia-h200/calibration", "results/gpu-nvidia-h200/validation", None),
]
#: per calibration set, the supplements measured elsewhere (placed by their anchor runs): the
#: CPU calibration has no steady step above 512 px, experiments/bench_speed_large.py measures them
SUPPLEMENTS = {"results/cpu-calibration": "results/cpu-speed-large/*"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, help="write the fitted model (every device kind) here")
    ap.add_argument("--set", nargs=2, action="append", metavar=("CALIBRATION", "VALIDATION"),
                    help="a calibration dir and its held-out dir (default: the CPU and H200 sets)")
    ap.add_argument("--batch", action="append", default=None, metavar="DIR",
                    help="object-batch runs (DIR/calibration, DIR/validation) for the --set of "
                    "the same position ('-': none)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")  # unreadable records are the report's business
    shipped = SpeedModel()
    sets = SETS
    if args.set:
        sets = [(c, v, (args.batch or [])[i] if i < len(args.batch or []) else None)
                for i, (c, v) in enumerate(args.set)]
    for cal, val, batch in sets:
        batch = None if batch in (None, "-") else batch
        sups = sorted(str(d) for d in Path().glob(SUPPLEMENTS.get(cal, "-"))
                      if (d / "calibration").is_dir())
        model, ev = fit_and_evaluate(cal, val, batch_dir=batch, supplements=sups)
        for kind, k in model.coeffs.items():
            info = model.calibration[kind]
            for s in info.get("supplements", []):  # every device kind's, not the CPU's only
                print(f"[{kind}] supplement {s['dir']}: placed at x{s['scale']:.3f} by "
                      f"{s['anchors']} anchor observations")
            shipped.coeffs[kind], shipped.calibration[kind] = k, info
            print(f"[{kind}] fitted on {info['runs']} runs ({', '.join(info['devices'])}, {cal}): "
                  + ", ".join(f"{n}={v:.4g}" for n, v in k.items()))
        for r in ev.itertuples():
            print(f"  {r.axis:24s} {r.model} {r.image_size}px {r.objects}obj {r.dtype} "
                  f"{r.predictor}: step {r.step_pred_s * 1e3:.1f} ms predicted vs "
                  f"{r.step_actual_s * 1e3:.1f} ms measured ({r.step_err:+.1%})")
        for axis, g in [("all", ev), *ev.groupby("axis")]:
            e = g["step_err"].abs()
            print(f"  [{ev['device_kind'].iloc[0]}] {axis:24s} {len(g):3d} obs: step time median "
                  f"{e.median():.1%} max {e.max():.1%}")
        for kind, info in model.calibration.items():
            b = info.get("object_batch")
            if not b:
                print(f"  [{kind}] object batches: no object-batch runs; the legacy batched "
                      "factor interpolated in the calls (not validated)")
                continue
            k = model.coeffs[kind]
            print(f"  [{kind}] object-batch term fitted on {b['runs']} runs ({b['dir']}): "
                  f"phi={k['batch_phi']:.4g} psi={k['batch_psi']:.4g}")
            for r in b.get("rows", []):
                print(f"    {r['axis']:24s} {r['objects']:3d} objects K={r['k']:<3d} "
                      f"{r['image_size']} px, {r['calls']} calls: batch factor {r['g_pred']:.3f} "
                      f"predicted vs {r['g_actual']:.3f} measured ({r['g_err']:+.1%}); step "
                      f"{r['step_pred_s']:.3f} s vs {r['step_actual_s']:.3f} s "
                      f"({r['step_err']:+.1%})")
            h = b.get("held_out")
            if h:
                print(f"  [{kind}] object batches, {h['runs']} held-out runs: batch factor median "
                      f"{h['median']:.1%} max {h['max']:.1%}; step median {h['step_median']:.1%} "
                      f"max {h['step_max']:.1%}")
    if args.write:
        shipped.save(args.write)
        print(f"speed model: {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

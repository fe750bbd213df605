"""The CPU speed calibration's large sizes: steady-state runs at 768 and 1024 px, placed on the
calibration's scale by anchor runs inside its range, and held-out runs between and around them.

The CPU calibration (``results/cpu-calibration``, the memory model's design) has no steady step
above 512 px: its 768 / 1024 px runs are 3-5 frames, all warm-up. So every CPU speed figure at
SAM 2's own 1024 px was an extrapolation of a shape fitted on 256-512 px, and tiny at 1024 px was
predicted 16 % fast by the calibration itself (19-26 % with the machine's probe). This script
runs, one ``sam2tune run`` process at a time on an idle machine (about 15 minutes on a 2-core
CPU), random-init, 10 frames each:

- ``calibration/``: the large points (tiny at 768 / 1024 px with 1 and 2 objects, small at 768 /
  1024 px, base_plus at 768 px) and the anchors (tiny 256 / 512 px with 1 object, tiny 384 px
  with 2, small 384 px: sizes the calibration has), so the fit can put this machine on the
  calibration machine's scale (:func:`sam2tune.speed_model.fit.fit_and_evaluate`'s
  ``supplements``: the anchors' median ratio to the joint fit);
- ``validation/``: seeded random points at sizes neither set has (672-992 px, not 768), tiny /
  small / base_plus, 1-2 objects, never fitted on.

Then it prints the speed model's CPU held-out error with the supplement (the calibration's own
validation set and this one), per axis:

    .venv/bin/python experiments/bench_speed_large.py  # results/cpu-speed-large/<date>-<cpu>
    .venv/bin/python experiments/bench_speed_large.py --report results/cpu-speed-large/<folder>
"""

from __future__ import annotations

import argparse
import datetime
import random
import subprocess
import sys
import time
import warnings
from pathlib import Path

from _bench_probe import cpu_slug  # experiments/, beside this file

from sam2tune.speed_model.fit import fit_and_evaluate

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 10
#: (model, size, objects): the large points, then the anchors (sizes the calibration has)
LARGE = [("sam2.1_tiny", 768, 1), ("sam2.1_tiny", 768, 2), ("sam2.1_tiny", 1024, 1),
         ("sam2.1_tiny", 1024, 2), ("sam2.1_small", 768, 1), ("sam2.1_small", 1024, 1),
         ("sam2.1_base_plus", 768, 1)]
ANCHORS = [("sam2.1_tiny", 256, 1), ("sam2.1_tiny", 512, 1), ("sam2.1_tiny", 384, 2),
           ("sam2.1_small", 384, 1)]
HELD_OUT_SIZES = (672, 704, 736, 800, 832, 864, 896, 928, 960, 992)
MODELS = ("sam2.1_tiny", "sam2.1_small", "sam2.1_base_plus")


def held_out(seed: int, n: int) -> list[tuple[str, int, int]]:
    """``n`` seeded points off both sets' sizes: every model at least once, base_plus with one
    object (a run stays within about two minutes here)."""
    rng = random.Random(seed)
    models = [MODELS[i % len(MODELS)] for i in range(n)]
    rng.shuffle(models)
    sizes = rng.sample(HELD_OUT_SIZES, n)
    return [(m, s, 1 if m == "sam2.1_base_plus" else rng.randint(1, 2))
            for m, s in zip(models, sizes, strict=True)]


def run(point: tuple[str, int, int], out: Path) -> None:
    m, s, k = point
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sam2tune", "run", "device=cpu", f"model={m}",
                    f"model.image_size={s}", f"video.num_frames={FRAMES}",
                    f"video.num_objects={k}", "probe.reference=false", f"results_dir={out}"],
                   check=True, stdout=subprocess.DEVNULL)
    print(f"  {out.name}: {m} {s} px {k} obj in {time.perf_counter() - t0:.0f} s", flush=True)


def report(folder: Path) -> str:
    warnings.simplefilter("ignore")
    model, ev = fit_and_evaluate("results/cpu-calibration", "results/cpu-validation",
                                 supplements=[folder])
    info = model.calibration["cpu"]
    lines = [f"CPU speed model fitted on {info['runs']} runs (results/cpu-calibration + "
             f"{folder}/calibration), random-init, steady step time [measured] vs [predicted]"]
    for sup in info.get("supplements", []):
        lines.append(f"supplement {sup['dir']}: {sup['runs']} runs, placed on the calibration's "
                     f"scale x{sup['scale']:.3f} by its {sup['anchors']} anchor runs "
                     f"(their ratio to the fit: {', '.join(f'{r:.3f}' for r in sup['ratios'])})")
    for r in ev.itertuples():
        lines.append(f"  {r.axis:28s} {r.model} {r.image_size}px {r.objects}obj {r.dtype} "
                     f"{r.predictor}: step {r.step_pred_s:.3f} s predicted vs "
                     f"{r.step_actual_s:.3f} s measured ({r.step_err:+.1%})")
    for axis, g in [("all", ev), *ev.groupby("axis")]:
        e = g["step_err"].abs()
        lines.append(f"  [cpu] {axis:28s} {len(g):3d} obs: step time median {e.median():.1%} "
                     f"max {e.max():.1%}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--points", type=int, default=4, help="held-out points")
    ap.add_argument("--report", type=Path, metavar="DIR",
                    help="only fit and report a folder's committed runs")
    a = ap.parse_args()
    if a.report is not None:
        if not (a.report / "calibration").is_dir():
            print(f"sam2tune: error: {a.report}: no calibration/ runs in it", file=sys.stderr)
            raise SystemExit(2)
        text = report(a.report)
        print(text)
        (a.report / "speed_large.txt").write_text(text + "\n")
        return
    out = ROOT / "results" / "cpu-speed-large" / f"{datetime.date.today()}-{cpu_slug()}"
    if any(out.glob("*/runs/*")):
        print(f"sam2tune: error: {out}: has runs already (--report to re-read them)",
              file=sys.stderr)
        raise SystemExit(2)
    t0 = time.perf_counter()
    for p in ANCHORS + LARGE:
        run(p, out / "calibration")
    for p in held_out(a.seed, a.points):
        run(p, out / "validation")
    text = report(out.relative_to(ROOT))
    text += f"\n(bench wall {time.perf_counter() - t0:.0f} s)"
    print(text)
    (out / "speed_large.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()

"""Real runs for the speed model's object-batch term, and its held-out error.

The calibration grid (256 px, 10 frames, objects 2 / 8 / 16 / 24 x object_batch 1 / 2 / 4 / 8 /
all) goes to ``OUT/calibration``; the held-out runs to ``OUT/validation``: seeded random points
off the grid (object counts and batch sizes the grid never used, each with its K = 1 reference
run) and one extrapolation per axis (40 objects: beyond the grid's 24; 512 px: the grid is all
256 px). Every point is its own ``sam2tune run`` process, one at a time (this machine's cores
are the runs': run it on an idle machine). ``experiments/bench_speed_model.py`` then fits the
term on the calibration runs only and prints, per held-out run, the batch factor (tracking time
at K over tracking time at K = 1: same objects, same machine, minutes apart) predicted vs
measured, and the whole step time predicted vs measured.

    .venv/bin/python experiments/bench_object_batch_speed.py           # runs (~22 min), fit
    .venv/bin/python experiments/bench_object_batch_speed.py --report  # committed runs: fit

The printed fit is ``experiments/bench_speed_model.py``'s on the CPU set with these runs
(committed output: results/object-batch/speed_term.txt).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
from pathlib import Path

OUT = Path("results/object-batch/speed")
FRAMES = 10
GRID = [(n, k) for n in (2, 8, 16, 24) for k in (1, 2, 4, 8, 0) if k == 1 or k == 0 or k < n]


def held_out(seed: int = 0) -> list[tuple[int, int, int, str]]:
    """(objects, K, size, axis): seeded random points off the grid, then the extrapolations."""
    rng = random.Random(seed)
    grid_n = {n for n, _ in GRID}
    pts: list[tuple[int, int, int, str]] = []
    while len(pts) < 6:
        n = rng.randint(3, 23)
        k = rng.choice([v for v in (3, 5, 6, 7, 9, 10, 12) if v < n] or [0])
        if n in grid_n or k == 0 or any(p[0] == n for p in pts):
            continue
        pts.append((n, k, 256, "random"))
    pts += [(40, 4, 256, "objects_extrapolation"), (8, 4, 512, "image_size_extrapolation")]
    return pts


def _run(out: Path, n: int, k: int, size: int) -> None:
    cmd = [sys.executable, "-m", "sam2tune", "run", "device=cpu", f"results_dir={out}",
           f"model.image_size={size}", f"video.num_frames={FRAMES}", f"video.num_objects={n}",
           f"knobs.object_batch={k}"]
    print(" ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def run(out: Path) -> None:
    for n, k in GRID:
        _run(out / "calibration", n, k, 256)
    for n, k, size, _ in held_out():
        _run(out / "validation", n, 1, size)
        _run(out / "validation", n, k, size)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--report", action="store_true", help="no runs: fit and print only")
    args = ap.parse_args(argv)
    if not args.report:
        run(args.out)
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_speed_model

    return bench_speed_model.main(
        ["--set", "results/cpu-calibration", "results/cpu-validation", "--batch", str(args.out)]
    )


if __name__ == "__main__":
    sys.exit(main())

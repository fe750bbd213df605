"""Re-derive the fps of recorded runs from their per-frame timelines, warm-up excluded.

Runs recorded before steady-state timing counted the first propagated frame in ``fps``; on the
H200 a bfloat16 run's frame 1 took 1.10 s and the next ones 0.06 s, so short runs read low by an
amount that depends on their length. Each report's timeline carries ``step_s`` per frame (and
which frames were tracked, i.e. not timed), so the steady figure is recomputed exactly as a new
run computes it (:func:`sam2tune.speed_model.timing.steady_timing`); the recorded figure is
kept as ``speed.recorded_fps`` and ``fps_method`` says the row was re-derived.

    python scripts/rederive_fps.py results/gpu-nvidia-h200 results/cpu-calibration ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sam2tune.paths import atomic_write_json
from sam2tune.results import iter_reports
from sam2tune.speed_model.timing import steady_timing

REDERIVED = (
    "re-derived from the timeline: 1 / the median step time, the first two propagated frames "
    "excluded"
)


def rederive(path: Path) -> tuple[float | None, float | None] | None:
    """(recorded fps, re-derived fps) of one report, rewritten in place; None if not possible."""
    rep = json.loads(path.read_text())
    row = rep.get("row", {})
    method = row.get("fps_method") or ""
    if row.get("status") != "ok" or (method and not method.startswith("re-derived")):
        return None  # failed, or recorded steady by the run itself
    steps = [t["step_s"] for t in rep.get("timeline") or [] if not t.get("tracked")]
    if len(steps) < 2:
        return None
    t = steady_timing(steps)
    old = (rep.get("speed") or {}).get("recorded_fps", row.get("fps"))  # the run's own figure
    row.update(fps=t.fps, warmup_s=t.warmup_s, fps_spread=t.spread, fps_method=REDERIVED)
    rep.setdefault("speed", {})["recorded_fps"] = old
    atomic_write_json(path, rep)
    return old, t.fps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="results dirs (their runs/ or below)")
    args = ap.parse_args(argv)
    n = 0
    for d in args.dirs:
        roots = sorted({p.parent.parent.parent for p in d.glob("**/runs/*/report.json")})
        for root in roots:
            for p in iter_reports(root):
                got = rederive(p)
                if got is None:
                    continue
                old, new = got
                n += 1
                ratio = f"{new / old:.3f}x" if old and new else "n/a"
                print(f"{p.parent.name} {root}: fps {old:.3f} -> {new:.3f} ({ratio})")
    print(f"re-derived {n} records", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Host peak RSS of held-out runs, predicted with the calibration's fitted host terms and with
the terms measured on this machine by the host-baseline probe
(:mod:`sam2tune.memory_model.host_probe`): per point measured RSS, both predictions, their
errors, and the median / max absolute error of each.

The points are seeded random draws OFF the calibration grid (:mod:`sam2tune.memory_model.design`:
its sizes are 256 / 384 / 512 / 768 / 1024 px, its lengths 3-8, 12, 16, 24, 32, 40, 48 frames):
288-640 px, 10-36 frames, 1-2 objects, stock / release / stream / bfloat16, sam2.1_tiny,
random-init, one real ``sam2tune run`` each (the project's run machinery, in this process).
About 5-8 minutes on an idle 2-core CPU (twice that beside other heavy processes; the probe,
when this machine has none cached yet, adds its minute or so once):

    .venv/bin/python experiments/bench_host_terms.py            # writes results/host-terms/
    .venv/bin/python experiments/bench_host_terms.py --points 4 --no-write

The calibration was recorded on an AMD EPYC: on another CPU kind the two columns test what
the probe is for (the calibration's allocator term does not transfer between machines); on an
AMD EPYC both should hold, and the local terms must meet the goal (median <= 5 %, max <= 10 %)
there too.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from _bench_probe import add_probe_options, this_probe  # experiments/, beside this file

from sam2tune.config.store import compose_run
from sam2tune.memory_model.calibrate import run_inputs
from sam2tune.memory_model.memory import MemoryModel, predict
from sam2tune.runner.launcher import run_isolated
from sam2tune.units import fmt_bytes

ROOT = Path(__file__).resolve().parents[1]
#: sizes and lengths the calibration design never uses (multiples of 16 / of nothing)
SIZES = (288, 320, 352, 416, 448, 480, 544, 576, 608, 640)
FRAMES = (10, 11, 13, 14, 18, 20, 22, 26, 28, 30, 34, 36)
BF16 = "knobs.dtype=bfloat16"
KNOBS = ("", "knobs.strategy=release", "knobs.strategy=stream", BF16)
CALIBRATION_CPU = "AMD EPYC"


def points(seed: int, n: int) -> list[list[str]]:
    """``n`` seeded held-out points (run overrides): sizes drawn without repeats across
    288-640 px, every knob setting at least once (bfloat16 at the smallest size drawn: its
    autocast is ~10x slower on a CPU), the length drawn among those that keep a run within
    about a minute on a 2-core CPU (the shortest, 10 frames, where none does)."""
    rng = random.Random(seed)
    sizes = sorted(rng.sample(SIZES, min(n, len(SIZES))))
    sizes += [rng.choice(SIZES) for _ in range(n - len(sizes))]
    knobs = [KNOBS[i % len(KNOBS)] for i in range(n) if KNOBS[i % len(KNOBS)] != BF16]
    rng.shuffle(knobs)
    knobs.insert(0, BF16)
    out: list[list[str]] = []
    for s, knob in zip(sizes, knobs[:n], strict=True):
        k = rng.choice((1, 1, 2))
        slow = 10 if knob == BF16 else 1
        fits = [f for f in FRAMES if f * k * (s / 256) ** 2 * slow <= 50 * (2 if slow > 1 else 1)]
        f = rng.choice(fits) if fits else min(FRAMES)
        out.append(
            [
                "device=cpu",
                "model=sam2.1_tiny",
                f"model.image_size={s}",
                f"video.num_frames={f}",
                f"video.num_objects={k if fits else 1}",
                "probe.reference=false",
                *knob.split(),
            ]
        )
    return out


def _pct(x: float) -> str:
    return f"{100 * x:+6.1f} %"


def measure(pts: list[list[str]]) -> list[dict]:
    """Run every point, then predict it both ways (this machine's baseline either way)."""
    model = MemoryModel.load()
    tmp = tempfile.mkdtemp(prefix="sam2tune-host-terms-")
    for ov in pts:
        row = run_isolated(compose_run(ov + [f"results_dir={tmp}"])).row
        print(f"  ran {' '.join(ov[2:])}: {row['status']} in {row['total_s']:.0f} s", flush=True)
    out = []
    for r in sorted(run_inputs(tmp), key=lambda r: r.run_id):
        cal = predict(r.workload, r.candidate, model, "cpu", host_terms="calibrated")
        loc = predict(r.workload, r.candidate, model, "cpu", host_terms="local")
        y = r.peak_host_rss_bytes
        out.append(
            {
                "point": f"{r.workload.image_size} px x {r.workload.num_frames} fr x "
                f"{r.workload.num_objects} obj "
                + (" ".join(r.candidate.overrides(r.workload)[2:]) or "stock"),
                "measured": int(y),
                "calibrated": cal.host_peak_bytes,
                "local": loc.host_peak_bytes,
                "err_cal": cal.host_peak_bytes / y - 1,
                "err_loc": loc.host_peak_bytes / y - 1,
                "alloc_cal": cal.host_terms["allocator"],
                "alloc_loc": loc.host_terms["allocator"],
                "src_loc": loc.host_sources["allocator"],
            }
        )
    return out


def report(rows: list[dict], cpu: str, probe: dict, wall_s: float) -> str:
    lines = [
        f"host peak RSS of {len(rows)} held-out sam2.1_tiny runs on this machine ({cpu}), "
        "random-init, off the calibration grid [measured], predicted with the calibration's "
        "host terms and with this machine's [predicted]",
        f"calibration: {CALIBRATION_CPU} (conf/memory_model.json); this machine: {cpu} -> "
        + (
            "the same CPU kind: this checks that the local terms hold here; the cross-kind check "
            "needs another CPU kind"
            if cpu == CALIBRATION_CPU
            else "another CPU kind: the cross-kind check"
        ),
        "probe [measured on this machine]: "
        + ", ".join(
            f"{r['image_size']} px peak {fmt_bytes(r['peak_host_rss_bytes'])}"
            for r in probe.get("runs", [])
        )
        + f"; cost {probe.get('seconds', float('nan')):.0f} s once per machine (cached)",
        f"local allocator term: {rows[0]['src_loc'] if rows else '?'}",
        "",
        f"{'point':58s} {'measured':>11s} {'calibrated':>11s} {'err':>8s} "
        f"{'local':>11s} {'err':>8s}",
    ]
    for r in rows:
        lines.append(
            f"{r['point']:58s} {fmt_bytes(r['measured']):>11s} {fmt_bytes(r['calibrated']):>11s} "
            f"{_pct(r['err_cal'])} {fmt_bytes(r['local']):>11s} {_pct(r['err_loc'])}"
        )
    lines.append("")
    for name, key in (("calibrated host terms", "err_cal"), ("local host terms", "err_loc")):
        errs = [abs(r[key]) for r in rows]
        lines.append(
            f"{name:22s} |error| median {100 * statistics.median(errs):.1f} %, "
            f"max {100 * max(errs):.1f} % [predicted vs measured]"
        )
    lines.append(
        f"(goal: median <= 5 %, max <= 10 %; bench wall {wall_s:.0f} s; "
        "sizes in binary units: MiB = 2^20 bytes, GiB = 2^30 bytes)"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_probe_options(ap, points=7)
    a = ap.parse_args()
    t0 = time.perf_counter()
    probe, cpu, slug = this_probe(a.refresh_probe)
    rows = measure(points(a.seed, a.points))
    text = report(rows, cpu, probe, time.perf_counter() - t0)
    print(text)
    if not a.no_write:
        out = ROOT / "results" / "host-terms" / f"{slug}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

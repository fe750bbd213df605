"""Steady step time of held-out CPU runs, predicted with the calibration's speed coefficients as
they are and scaled to this machine by its probe (:mod:`sam2tune.speed_model.local`): per run
the measured step, both predictions and their errors, then the median / max absolute error of
each.

The probe is the host probe's short sam2.1_tiny runs (256 / 512 / 768 px, 1 object, stock;
measured once per machine and cached). The held-out runs are seeded random draws off the probe's
points: other sizes (288-640 px), other models (tiny, small, base_plus), 1-4 objects, stock /
release / stream, 12 frames, and one tiny run at 1024 px (beyond the probe's sizes), random-init,
each its own ``sam2tune run`` process, one at a time (run it on an idle machine: another process
on the cores slows the runs, not the probe measured before them). About 5-7 minutes on a 2-core
CPU:

    .venv/bin/python experiments/bench_speed_local.py         # results/speed-local/<date>-<cpu>
    .venv/bin/python experiments/bench_speed_local.py --seed 1 --refresh-probe  # <...>-seed1
    .venv/bin/python experiments/bench_speed_local.py --points 3 --no-write
    .venv/bin/python experiments/bench_speed_local.py --report results/speed-local/*/

Three predictions per run: the calibration's coefficients as they are, one scale for every
step (the probe's mean ratio) and the scale growing with the step's time as the probe's
sizes measured it (what ``predict`` / ``recommend`` use). The probe is kept beside the runs
(``probe.json``) so ``--report`` reads a folder's runs against the probe they were run with
(several folders: each, then every run together).
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench_probe import add_probe_options, this_probe  # experiments/, beside this file

from sam2tune.memory_model.host_probe import measure_local_runs
from sam2tune.memory_model.workload import Workload
from sam2tune.speed_model.fit import observations
from sam2tune.speed_model.local import localised
from sam2tune.speed_model.model import load_speed_model, predict_speed

ROOT = Path(__file__).resolve().parents[1]
SIZES = (288, 320, 352, 384, 416, 448, 480, 544, 576, 608, 640)
MODELS = ("sam2.1_tiny", "sam2.1_small", "sam2.1_base_plus")
STRATEGIES = ("stock", "release", "stream")
FRAMES = 12


def points(seed: int, n: int) -> list[list[str]]:
    """``n`` seeded points off the probe's (its sizes are 256 / 512 / 768 px with one tiny
    object): every model and strategy at least once, the size and objects drawn so that a run
    stays within about a minute here (base_plus at the smaller sizes)."""
    rng = random.Random(seed)
    models = [MODELS[i % len(MODELS)] for i in range(n)]
    strategies = [STRATEGIES[i % len(STRATEGIES)] for i in range(n)]
    rng.shuffle(models)
    rng.shuffle(strategies)
    out = []
    for m, st in zip(models, strategies, strict=True):
        cost = {"sam2.1_tiny": 1.0, "sam2.1_small": 1.3, "sam2.1_base_plus": 2.6}[m]
        k = rng.randint(1, 4)

        def fits(k: int, cost: float = cost) -> list[int]:
            return [s for s in SIZES if cost * (s / 256) ** 2 * (1 + 0.5 * k) <= 9]

        while not fits(k):  # base_plus with 4 objects: fewer objects, not a longer run
            k -= 1
        sizes = fits(k)
        s = rng.choice(sizes)
        out.append(["device=cpu", f"model={m}", f"model.image_size={s}",
                    f"video.num_frames={FRAMES}", f"video.num_objects={k}",
                    "probe.reference=false", f"knobs.strategy={st}"])
    # and beyond the probe's largest size
    out.append(["device=cpu", "model=sam2.1_tiny", "model.image_size=1024",
                f"video.num_frames={FRAMES}", "video.num_objects=1", "probe.reference=false"])
    return out


def measure(pts: list[list[str]], out: Path) -> None:
    for ov in pts:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sam2tune", "run", *ov, f"results_dir={out}"],
                       check=True, stdout=subprocess.DEVNULL)
        print(f"  ran {' '.join(ov[1:])} in {time.perf_counter() - t0:.0f} s", flush=True)


def _pct(x: float) -> str:
    return f"{100 * x:+6.1f} %"


def _probe_line(info: dict) -> str:
    return (", ".join(f"{r['image_size']} px {r['measured_step_s']:.3f} s a step vs "
                      f"{r['predicted_step_s']:.3f} s calibrated (x{r['ratio']:.2f})"
                      for r in info["runs"])
            + f" -> one scale x{info['scale']:.3f}; growing: x{info['scale']:.3f} at "
            f"{info['t_ref']:.3f} s, ratio ~ step^{info['exponent']:.3f}"
            + (f" (fitted {info['fitted']:.3f}, cut)" if info.get("clamped") else ""))


SUMMARY = (("calibrated coefficients", "err_cal"), ("one scale", "err_flat"),
           ("scale growing with step", "err_loc"))


def _summary(rows: list[dict]) -> list[str]:
    out = []
    for name, key in SUMMARY:
        errs = [abs(r[key]) for r in rows]
        out.append(f"{name:24s} |error| median {100 * statistics.median(errs):.1f} %, "
                   f"max {100 * max(errs):.1f} % [predicted vs measured]")
    return out


def report(
    out: Path, cpu: str, probe: dict, wall_s: float | None, after: dict | None = None
) -> tuple[str, list[dict]]:
    shipped = load_speed_model()
    flat = localised(shipped, probe, "cpu", shape=False)
    local = localised(shipped, probe, "cpu")
    info = local.calibration["cpu"]["local"]
    if info["scale"] is None:
        raise SystemExit(f"no local scale: {info['why']}")
    cal = shipped.calibration["cpu"]
    obs = observations(out)
    rows = []
    for o in obs:
        if o.objects != max(p.objects for p in obs if p.run_id == o.run_id):
            continue  # the step with every object present
        w = Workload(**{**o.workload.__dict__, "num_objects": o.objects, "first_frames": None,
                        "cond_frames": None, "object_frames": None})
        a, f, b = (predict_speed(w, o.candidate, m, "cpu") for m in (shipped, flat, local))
        assert a is not None and f is not None and b is not None
        rows.append({
            "point": f"{o.workload.model.removeprefix('sam2.1_'):9s} "
            f"{o.candidate.image_size or o.workload.image_size} px {o.objects} obj "
            f"{o.candidate.strategy}",
            "measured": o.step_s, "calibrated": a.step_s, "flat": f.step_s, "local": b.step_s,
            "err_cal": a.step_s / o.step_s - 1, "err_flat": f.step_s / o.step_s - 1,
            "err_loc": b.step_s / o.step_s - 1,
        })
    date = min(o.run_id for o in obs)[:8] if obs else str(datetime.date.today())
    lines = [
        f"steady step time of {len(rows)} held-out CPU runs on this machine ({cpu}, "
        f"{date[:4]}-{date[4:6]}-{date[6:8]}), random-init, off the probe's points [measured], "
        "predicted with the calibration's speed coefficients, with one scale to this machine and "
        "with the scale growing with the step [predicted]",
        f"calibration: {cal.get('runs', '?')} runs on {', '.join(cal.get('devices', []))} "
        "(conf/speed_model.json)",
        "probe [measured on this machine, sam2.1_tiny, 1 object, stock]: " + _probe_line(info),
        "",
        f"{'point':34s} {'measured':>9s} {'calibrated':>10s} {'err':>8s} {'one scale':>9s} "
        f"{'err':>8s} {'growing':>9s} {'err':>8s}",
    ]
    for r in rows:
        lines.append(f"{r['point']:34s} {r['measured']:8.3f}s {r['calibrated']:9.3f}s "
                     f"{_pct(r['err_cal'])} {r['flat']:8.3f}s {_pct(r['err_flat'])} "
                     f"{r['local']:8.3f}s {_pct(r['err_loc'])}")
    lines.append("")
    lines += _summary(rows)
    if after is not None:  # the same probe after the runs: how much the machine moved
        again = localised(shipped, after, "cpu").calibration["cpu"]["local"]
        if again["scale"] is not None:
            lines.append("probe again after the runs [measured]: " + _probe_line(again)
                         + " (the machine's drift: one scale "
                         f"x{again['scale'] / info['scale']:.3f} of the first probe's)")
    lines.append("(steady step: the speed model's reading of a run's timeline, warm-up and "
                 "prompted frames left out, every object present"
                 + (f"; bench wall {wall_s:.0f} s)" if wall_s is not None else
                    "; re-reported from the committed runs and probe.json)"))
    return "\n".join(lines), rows


def _input_error(message: str) -> None:
    """The project's one line for bad input, exit 2."""
    print(f"sam2tune: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_probe_options(ap, points=6)
    ap.add_argument("--report", type=Path, nargs="+", metavar="DIR",
                    help="only report results folders' runs against their probe.json")
    a = ap.parse_args()
    if a.report is not None:
        every: list[dict] = []
        for d in a.report:
            probe_file = d / "probe.json"
            if not probe_file.is_file():
                _input_error(f"{probe_file}: no probe beside the runs")
        for d in a.report:
            saved = json.loads((d / "probe.json").read_text())
            text, rows = report(d, saved["cpu"], saved["probe"], None, saved.get("after"))
            every += rows
            print(f"== {d}\n{text}\n")
            if not a.no_write:
                (d / "speed_local.txt").write_text(text + "\n")
        if len(a.report) > 1:
            print(f"every run of the {len(a.report)} folders ({len(every)} runs):")
            print("\n".join(_summary(every)))
        return
    t0 = time.perf_counter()
    probe, cpu, slug = this_probe(a.refresh_probe)
    name = f"{datetime.date.today()}-{slug}"
    name += f"-seed{a.seed}" if a.seed else ""
    out = Path(tempfile.mkdtemp()) if a.no_write else ROOT / "results" / "speed-local" / name
    if (out / "runs").is_dir() and any((out / "runs").iterdir()):
        _input_error(f"{out}: has runs already (another --seed, or --report to re-read them)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps({"cpu": cpu, "probe": probe}, indent=1) + "\n")
    measure(points(a.seed, a.points), out)
    after = measure_local_runs()  # not cached: the cache keeps the probe the runs were read with
    (out / "probe.json").write_text(
        json.dumps({"cpu": cpu, "probe": probe, "after": after}, indent=1) + "\n")
    text, _ = report(out, cpu, probe, time.perf_counter() - t0, after)
    print(text)
    if not a.no_write:
        (out / "speed_local.txt").write_text(text + "\n")
        print(f"wrote {(out / 'speed_local.txt').relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""Measured, not projected: stream over a one-hour-equivalent video (3,600 frames) beside stock.

Summarises the runs recorded in ``--results-dir`` (default ``results/cpu-long``): for each
setting's longest run, the device-resident state (census) and host RSS (measured) at the end of
the warm-up and at the last frame, their least-squares slope after the warm-up, and the spread
(max - min) after it; then writes the same text to ``<results-dir>/long_run.txt`` and the
report (with the ``timeline_by_setting`` figure) to ``<results-dir>/report/``.

With ``--run`` it first records the two runs (isolated runs, one after the other): stream over
``--frames`` (3,600) and stock over ``--stock-frames`` (600: stock's growth is linear, and its
frame cache alone would hold 3,600 frames):

    .venv/bin/python experiments/bench_long_run.py --run     # about 30 + 10 min on a 2-core CPU
    sam2tune run model.image_size=256 video.num_frames=3600 video.num_objects=1 \\
        probe.reference=false knobs.strategy=stream limits.timeout_s=10800 \\
        results_dir=results/cpu-long   # (the default 30-min limit is too short here)
    sam2tune run model.image_size=256 video.num_frames=600 video.num_objects=1 \\
        probe.reference=false knobs.strategy=stock limits.timeout_s=10800 \\
        results_dir=results/cpu-long
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from sam2tune.analysis.report import build_report
from sam2tune.analysis.table import prepare
from sam2tune.paths import report_path
from sam2tune.results import load_results
from sam2tune.units import fmt_bytes


def summarise(results_dir: Path, warmup: int) -> list[str]:
    df = prepare(load_results(results_dir))
    ok = df[df["status"] == "ok"].sort_values(["num_frames", "run_id"])
    lines = []
    for setting, g in ok.groupby("setting", sort=True):
        r = g.iloc[-1]
        rep = json.loads(report_path(results_dir, r["run_id"]).read_text())
        tl = pd.DataFrame(rep["timeline"])
        after = tl[tl["frame"] >= warmup]
        lines.append(
            f"{setting}: run {r['run_id']}, {int(r['num_frames'])} frames at "
            f"{int(r['image_size'])} px, {int(r['num_objects'])} object(s), device {r['device']}, "
            f"weights {r['weights']}; {r['fps']:.2f} fps, total {r['total_s']:.0f} s"
        )
        for col, what in (
            ("device_resident_bytes", "device-resident state [census]"),
            ("host_rss_bytes", "host RSS [measured]"),
        ):
            y = after[col].astype(float)
            slope = np.polyfit(after["frame"].astype(float), y, 1)[0] if len(after) > 1 else 0.0
            lines.append(
                f"  {what}: frame {warmup} {fmt_bytes(int(y.iloc[0]))}, last frame "
                f"{fmt_bytes(int(y.iloc[-1]))}; after frame {warmup}: slope {slope:,.0f} B/frame, "
                f"spread (max - min) {fmt_bytes(int(y.max() - y.min()))}"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", type=Path, default=Path("results/cpu-long"))
    ap.add_argument("--frames", type=int, default=3600, help="the stream run's length")
    ap.add_argument("--stock-frames", type=int, default=600, help="the stock run's length")
    ap.add_argument("--warmup", type=int, default=100, help="frames before the flatness check")
    ap.add_argument("--run", action="store_true", help="record the stock and stream runs first")
    args = ap.parse_args()
    if args.run:
        for strategy, n in (("stream", args.frames), ("stock", args.stock_frames)):
            subprocess.run(
                [sys.executable, "-m", "sam2tune", "run", "model.image_size=256",
                 f"video.num_frames={n}", "video.num_objects=1",
                 "probe.reference=false", "limits.timeout_s=10800", f"knobs.strategy={strategy}",
                 f"results_dir={args.results_dir}"],
                check=True,
            )
    lines = summarise(args.results_dir, args.warmup)
    text = "\n".join(lines) + "\n"
    print(text, end="")
    (args.results_dir / "long_run.txt").write_text(text)
    html, _ = build_report(
        args.results_dir,
        args.results_dir / "report",
        title=f"Measured, not projected: stream over {args.frames:,} frames beside stock",
        figures=["timeline_by_setting", "memory_by_role", "fps_by_setting"],
        intro="Per setting (warm-up excluded from the slopes):\n\n" + "\n".join(
            f"    {line}" for line in lines
        ),
    )
    print(f"report: {html}")


if __name__ == "__main__":
    main()

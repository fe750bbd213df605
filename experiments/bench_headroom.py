"""The usable-memory rule's allocator headroom, fitted on recorded CUDA runs, and its error.

For every recorded CUDA run: allocated peak, reserved peak, and reserved - allocated; the fitted
envelope ``min(ratio x allocated, cap)`` (:func:`sam2tune.gpus.fit_headroom`) beside the old
single multiplier; the rule's error per run (predicted - measured headroom) and what each rule
leaves usable on a few catalog GPUs.

    .venv/bin/python experiments/bench_headroom.py results/gpu-nvidia-h200 \\
        [--write conf/memory_model.json]   # store the fit in a model file's CUDA calibration
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from pathlib import Path

from sam2tune.gpus import catalog, fit_headroom, usable_memory
from sam2tune.memory_model.memory import MemoryModel
from sam2tune.results import InvalidRecordWarning, load_results
from sam2tune.units import MiB, fmt_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results_dirs", nargs="+", help="folders of recorded CUDA runs")
    ap.add_argument("--write", help="model file whose CUDA calibration gets the fit")
    a = ap.parse_args()
    pairs, labels = [], []
    dirs = sorted({str(r.parent.parent) for d in a.results_dirs for r in Path(d).rglob("runs/*")
                   if (r / "report.json").is_file()})
    for d in dirs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InvalidRecordWarning)
            df = load_results(d)
        df = df[df["cuda_max_allocated_bytes"].notna() & df["cuda_max_reserved_bytes"].notna()]
        for r in df.itertuples():
            pairs.append((int(r.cuda_max_allocated_bytes), int(r.cuda_max_reserved_bytes)))
            labels.append(f"{r.device_name} {r.image_size}px {r.num_frames}f")
    head = fit_headroom(pairs, f"fitted on {len(pairs)} CUDA runs of {', '.join(a.results_dirs)}")
    ratio_rule = max(r / al for al, r in pairs)
    print(f"{len(pairs)} CUDA runs; headroom = min({head.ratio:.3f} x peak, "
          f"{fmt_bytes(head.cap_bytes)}) [envelope of the runs]")
    print(f"{'allocated':>12s} {'reserved':>12s} {'excess':>10s} {'ratio':>6s} "
          f"{'rule':>10s} {'rule - measured':>16s}")
    for (al, r), _ in sorted(zip(pairs, labels, strict=True))[:: max(1, len(pairs) // 12)]:
        print(f"{fmt_bytes(al):>12s} {fmt_bytes(r):>12s} {fmt_bytes(r - al):>10s} {r / al:6.2f} "
              f"{fmt_bytes(head.of(al)):>10s} {(head.of(al) - (r - al)) / MiB:+13.1f} MiB")
    print(f"error: under-predicts no run by more than {fmt_bytes(head.max_under_bytes)}; "
          f"median over-prediction {fmt_bytes(head.median_over_bytes)}")
    model = MemoryModel.load(a.write) if a.write else MemoryModel.load()
    cal = model.calibration.setdefault("cuda", {})
    cal["cuda_headroom"] = dataclasses.asdict(head)
    ctx = cal.get("cuda_context_bytes", 0)
    ratio_rule = float(cal.get("cuda_reserved_over_allocated") or ratio_rule)
    print(f"usable memory, old rule (total - context {fmt_bytes(ctx)}) / {ratio_rule:.2f} vs "
          "the fitted rule:")
    for name in ("RTX 3090", "RTX 4090", "A100 80GB", "H200"):
        total = catalog()[name]
        old = int((total - ctx) / ratio_rule)
        print(f"  {name:10s} {fmt_bytes(total):>10s}: old {fmt_bytes(old):>10s}, "
              f"fitted {fmt_bytes(usable_memory(total, model)[0]):>10s}")
    if a.write:
        model.save(a.write)
        print(f"wrote calibration.cuda.cuda_headroom into {a.write}")
    print(json.dumps(cal["cuda_headroom"]))


if __name__ == "__main__":
    main()

"""The usable-memory rule against reality: the longest video that really runs under a GPU budget.

On CUDA, for each budget (``limits.device_memory_budget``: PyTorch's
``set_per_process_memory_fraction``, which caps the caching allocator's reserved memory), bisect
on ``video.num_frames`` with real isolated stock runs (1024 px by default) for the largest length
that finishes ``ok`` (not ``oom``), and compare it with the memory model's answer: the largest
length whose predicted allocated peak plus the fitted headroom fits the budget
(:func:`sam2tune.gpus.usable_memory`, with the CUDA context added back, since the fraction
applies to the allocator alone). Prints both and the error in frames and per cent.

    .venv/bin/python experiments/bench_usable_bisect.py --budgets 4GiB,8GiB \\
        --results-dir results/gpu-<name>/usable [--image-size 1024] [--objects 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from sam2tune.gpus import headroom_of, usable_memory
from sam2tune.memory_model.calibrate import workload_of
from sam2tune.memory_model.memory import Candidate, MemoryModel, max_frames_within_budget
from sam2tune.units import fmt_bytes, parse_bytes


def _runs_ok(args: argparse.Namespace, frames: int, budget: int) -> bool:
    """One isolated stock run of ``frames`` frames under ``budget``: did it finish ok?"""
    cmd = [sys.executable, "-m", "sam2tune", "run", "device=cuda",
           f"model.image_size={args.image_size}", f"video.num_frames={frames}",
           f"video.num_objects={args.objects}", "probe.reference=false",
           f"limits.device_memory_budget={budget}", f"results_dir={args.results_dir}"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    ok = "status=ok" in p.stdout
    print(f"    {frames:6d} frames: {'ok' if ok else 'not ok'}", flush=True)
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="4GiB,8GiB")
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--results-dir", default="results/usable-bisect")
    ap.add_argument("--out", help="JSON file for the figures")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("bench_usable_bisect: needs a CUDA GPU (set_per_process_memory_fraction)")
    from sam2tune.config.store import compose_run

    model = MemoryModel.load()
    _, ctx, _ = headroom_of(model)
    out = []
    for b in args.budgets.split(","):
        budget = int(parse_bytes(b, name="budgets") or 0)
        usable = usable_memory(budget + ctx, model)[0]  # the fraction caps the allocator only
        cfg = compose_run([f"model.image_size={args.image_size}",
                           f"video.num_objects={args.objects}", "video.num_frames=64"])
        pred = max_frames_within_budget(lambda n, c=cfg: workload_of(c, n), Candidate(), model,
                                        "cuda", usable)
        print(f"budget {fmt_bytes(budget)}: predicted {pred} frames fit (usable allocated "
              f"{fmt_bytes(usable)})", flush=True)
        lo, hi = 1, max(2, int((pred or 64) * 1.5))
        while _runs_ok(args, hi, budget):  # grow until a length fails
            lo, hi = hi, hi * 2
        while hi - lo > max(1, lo // 50):  # bisect to 2 %
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if _runs_ok(args, mid, budget) else (lo, mid)
        err = (pred - lo) / lo if pred else None
        print(f"  real: {lo} frames run, {hi} do not; predicted {pred}: error "
              f"{'n/a' if err is None else f'{err:+.1%}'} (negative = the answer is safe)")
        out.append({"budget_bytes": budget, "usable_bytes": usable, "predicted_frames": pred,
                    "max_frames_ok": lo, "min_frames_failed": hi, "error": err})
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

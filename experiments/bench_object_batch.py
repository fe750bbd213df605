"""Object batches (``knobs.object_batch``): fps and peak for K = 1, 4, 16 and all, side by side in
one process, with the masks compared to K = 1: the largest logit difference, the mask pixels
that differ and how close to 0 K = 1's logit is there (float32 rounding flips a pixel only
where the logit is within it of the threshold).

Same predictor, video and prompts for every K; fps is steady (the first two frames left out).
Peak: ``torch.cuda.max_memory_allocated`` on CUDA (measured); on a CPU the memory model's device
peak for the same workload (predicted, labelled). The goal is on CUDA: >= 3x the per-object fps
at 16 objects, activations bounded by K.

    .venv/bin/python experiments/bench_object_batch.py [--device cuda] [--objects 4 16 32]
        [--frames 8] [--image-size 256] [--out results/object-batch/bench_cpu.txt]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import sam2tune
from sam2tune.memory_model.memory import Candidate, MemoryModel, Workload, predict
from sam2tune.provenance import cpu_name
from sam2tune.units import fmt_bytes


def _video(d: Path, frames: int, objects: int, h: int = 180, w: int = 320) -> list[dict]:
    """A synthetic JPEG video with ``objects`` moving squares and a box prompt for each."""
    rng = np.random.default_rng(0)
    cols = int(np.ceil(np.sqrt(objects)))
    cell_w, cell_h = w // cols, h // cols
    boxes = []
    for k in range(objects):
        x0, y0 = (k % cols) * cell_w + 2, (k // cols) * cell_h + 2
        boxes.append([x0, y0, x0 + cell_w // 2, y0 + cell_h // 2])
    for i in range(frames):
        a = (rng.random((h, w, 3)) * 60).astype(np.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            a[y0 + i % 3 : y1 + i % 3, x0:x1] = (40 * k % 255, 200 - 5 * k % 200, 90)
        Image.fromarray(a).save(d / f"{i:05d}.jpg", quality=95)
    return [dict(frame_idx=0, obj_id=k + 1, box=b) for k, b in enumerate(boxes)]


def _run(pred, video, prompts, k, device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    masks, times = {}, []
    t0 = time.perf_counter()
    for f, _, logits in sam2tune.propagate(pred, video, prompts, strategy="release",
                                           object_batch=k):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        masks[f] = logits.cpu()
        t1 = time.perf_counter()
        times.append(t1 - t0)
        t0 = t1
    steady = times[2:] or times
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return masks, len(steady) / sum(steady), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--objects", type=int, nargs="+", default=[4, 16, 32])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    pred = sam2tune.build_predictor("sam2.1_tiny", None, a.device, image_size=a.image_size)
    model = MemoryModel.load()
    kind = device.type
    where = torch.cuda.get_device_name(device) if kind == "cuda" else cpu_name()
    lines = [
        f"object_batch benchmark: sam2.1_tiny random-init, {a.image_size} px, {a.frames} frames, "
        f"strategy=release, {where} ({kind}); fps steady (first 2 frames left out)",
        f"{'objects':>7} {'K':>4} {'fps':>7} {'vs K=1':>7} {'peak':>12} {'figure':>10} "
        f"{'max |dlogit|':>13} {'flipped':>8} {'|logit| max':>11}  (flipped: mask pixels "
        "unlike K=1's, of every frame; |logit| max: K=1's logit at those pixels)",
    ]
    print(lines[0], flush=True)
    for n in a.objects:
        with tempfile.TemporaryDirectory() as t:
            prompts = _video(Path(t), a.frames, n)
            ref = None
            for k in (1, 4, 16, 0):
                if 1 < k >= n:
                    continue
                masks, fps, peak = _run(pred, t, prompts, k, device)
                if ref is None:
                    ref, fps1 = masks, fps
                diff = max(float((masks[f] - ref[f]).abs().max()) for f in ref)
                flips = [(masks[f] > 0) != (ref[f] > 0) for f in ref]
                flipped = sum(int(x.sum()) for x in flips)
                # a flipped pixel's logit is within the rounding of 0 (no real disagreement)
                edge = max(
                    (float(ref[f][x].abs().max()) for f, x in zip(ref, flips, strict=True)
                     if x.any()),
                    default=0.0,
                )
                fig = "measured"
                if peak is None:
                    w = Workload("sam2.1_tiny", a.image_size, a.frames, n, video_height=180,
                                 video_width=320, weights_bytes=sum(
                                     p.numel() * 4 for p in pred.parameters()))
                    peak = predict(w, Candidate(strategy="release", object_batch=k), model,
                                   kind).device_peak_bytes
                    fig = "predicted"
                row = (f"{n:>7} {('all' if k == 0 else k):>4} {fps:>7.2f} {fps / fps1:>6.2f}x "
                       f"{fmt_bytes(peak):>12} {fig:>10} {diff:>13.2e} {flipped:>8} "
                       f"{edge:>11.1e}")
                lines.append(row)
                print(row, flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

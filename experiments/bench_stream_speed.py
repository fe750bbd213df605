"""Stream's decoding ahead vs stock SAM 2's up-front loading, measured side by side in one process.

On one synthetic 1080p JPEG video (default: 1920 x 1080 frames, 2 objects), with one SAM 2 tiny
predictor (random-init unless a checkpoint is cached; speed does not depend on the weights):

* decode ms/frame: SAM 2's own JPEG reader + resize + normalise, 1080p -> image_size, one thread;
* for stock, stream with frames decoded in the loop (``stream_prefetch=0``) and stream with
  ``--prefetch`` frames decoded ahead by as many threads: init_state time (stock decodes every
  frame there, on one thread), propagation time, the time the loop waited on frames, end-to-end
  time (init + prompts + propagation) and its ratio to stock's; masks compared bit for bit.

Each variant runs ``--rounds`` times in alternation after a warm-up; medians are printed.

    .venv/bin/python experiments/bench_stream_speed.py [--device cuda] [--image-size 1024] \\
        [--frames 200] [--prefetch 8] [--out results/.../stream_speed.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sam2tune.adapter.build import build_predictor
from sam2tune.adapter.frames import StreamingFrames
from sam2tune.config.schema import KnobsConfig, ModelConfig, ScenarioConfig, VideoConfig
from sam2tune.runner.measure import propagate
from sam2tune.scenario import make_prompts
from sam2tune.video.sources import resolve_video


def decode_ms(path: str, image_size: int, n: int) -> float:
    f = StreamingFrames(path, image_size, torch.device("cpu"), window=1)
    for t in range(min(n, len(f))):
        f[t]
    f.close()
    return 1000 * f.decode_s / f.decoded


def masks_equal(a, b) -> bool:
    if a.frames != b.frames:
        return False
    for t in a.frames:
        ma, mb = a.get(t), b.get(t)
        if ma.keys() != mb.keys() or any(not np.array_equal(ma[i], mb[i]) for i in ma):
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--image-size", type=int, default=None, help="default: 1024 CUDA, 256 CPU")
    ap.add_argument("--frames", type=int, default=None, help="default: 200 CUDA, 24 CPU")
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--prefetch", type=int, default=KnobsConfig.stream_prefetch)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()
    dev = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    S = args.image_size or (1024 if dev.type == "cuda" else 256)
    n = args.frames or (200 if dev.type == "cuda" else 24)
    cache = Path(tempfile.mkdtemp(prefix="sam2tune-stream-speed-"))
    video = resolve_video(
        VideoConfig(num_frames=n, num_objects=args.objects, height=1080, width=1920), cache
    )
    prompts = make_prompts(video, ScenarioConfig(), n)
    built = build_predictor(ModelConfig(image_size=S), KnobsConfig(), dev, cache)
    dms = decode_ms(video.sam2_path, S, 20)
    variants = {
        "stock": KnobsConfig(),
        "stream prefetch=0": KnobsConfig(strategy="stream", stream_prefetch=0),
        f"stream prefetch={args.prefetch}": KnobsConfig(
            strategy="stream", stream_prefetch=args.prefetch
        ),
    }
    warm = resolve_video(VideoConfig(num_frames=4, num_objects=args.objects, height=1080,
                                     width=1920), cache)
    propagate(built.predictor, warm, make_prompts(warm, ScenarioConfig(), 4), KnobsConfig(), dev,
              probes=False)
    figs: dict[str, dict[str, list[float]]] = {k: {} for k in variants}
    masks = {}
    for _ in range(args.rounds):
        for name, knobs in variants.items():
            t0 = time.perf_counter()
            res = propagate(built.predictor, video, prompts, knobs, dev, probes=False)
            total = time.perf_counter() - t0
            prop = n / res.fps if res.fps else float("nan")
            for k, v in (
                ("init_s", res.init_s),
                ("propagation_s", prop),
                ("waited_s", res.frame_wait_s or 0.0),
                ("end_to_end_s", total),
            ):
                figs[name].setdefault(k, []).append(v)
            masks[name] = res.masks
    med = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in figs.items()}
    stock = med["stock"]["end_to_end_s"]
    print(
        f"device {dev.type} ({built.weights}); {n} frames 1920x1080 JPEG -> {S} px, "
        f"{args.objects} objects; medians of {args.rounds} rounds"
    )
    print(f"decode (SAM 2's reader, one thread): {dms:.1f} ms/frame")
    print(f"{'variant':<22}{'init s':>9}{'propag. s':>11}{'waited s':>10}{'total s':>10}"
          f"{'total/stock':>13}  masks = stock")
    out = {"device": dev.type, "weights": built.weights, "frames": n, "image_size": S,
           "source": "1920x1080 JPEG", "decode_ms_per_frame": dms, "rounds": args.rounds,
           "variants": {}}
    for name, m in med.items():
        same = masks_equal(masks["stock"], masks[name])
        ratio = m["end_to_end_s"] / stock
        print(f"{name:<22}{m['init_s']:>9.2f}{m['propagation_s']:>11.2f}{m['waited_s']:>10.2f}"
              f"{m['end_to_end_s']:>10.2f}{ratio:>13.3f}  {'yes' if same else 'NO'}")
        out["variants"][name] = {**m, "ratio_to_stock": ratio, "masks_identical": same,
                                 "rounds": figs[name]}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

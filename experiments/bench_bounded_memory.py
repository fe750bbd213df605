"""Bounded-memory strategies vs stock SAM 2, measured side by side in one invocation.

Runs four isolated runs on one synthetic video (default 200 frames, image_size 512, 3 objects):
stock, stock + offload_video_to_cpu, release, stream; then prints

* peak accelerator memory stock / release and stock / stream (CUDA allocator figures on a GPU,
  the census+tracked-activations estimate elsewhere);
* host RSS stock (offloaded) / stream;
* fps stream / stock;
* the per-frame slope of the device-resident bytes after the warm-up window (bytes per frame);
* a projection to 3,600 frames at 1024 px with 5 objects: SAM 2's exact per-frame sizes (frames
  3 x S^2 x 4 B; maskmem 64 x (S/16)^2 x 2 B + masks (S/4)^2 x 4 B + pointer per object-frame)
  plus the measured fixed part and activations scaled by (1024/S)^2.

    .venv/bin/python experiments/bench_bounded_memory.py \
[--frames 200] [--image-size 512] [--objects 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import sam2tune
from sam2tune.config.schema import KnobsConfig, ModelConfig, ProbeConfig, RunConfig, VideoConfig
from sam2tune.runner.launcher import run_isolated
from sam2tune.units import MiB, fmt_bytes

VARIANTS = {
    "stock": KnobsConfig(),
    "stock+offload_video": KnobsConfig(offload_video_to_cpu=True),
    "release": KnobsConfig(strategy="release"),
    "stream": KnobsConfig(strategy="stream"),
}


def device_peak(row) -> tuple[int, str]:
    if row.get("cuda_max_allocated_bytes"):
        return int(row["cuda_max_allocated_bytes"]), "measured (CUDA allocator)"
    return int(row["est_device_peak_bytes"]), "estimated (census+tracked-activations)"


def slope(timeline: list[dict], key: str, skip: int) -> float:
    pts = [(t["frame"], t[key]) for t in timeline if t["frame"] >= skip]
    if len(pts) < 2:
        return float("nan")
    x, y = np.array(pts, dtype=float).T
    return float(np.polyfit(x, y, 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--objects", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results-dir", default=None)
    ap.add_argument("--fps-rounds", type=int, default=3)
    ap.add_argument("--fps-frames", type=int, default=40)
    ap.add_argument("--fps-image-size", type=int, default=256)
    ap.add_argument("--skip-isolated", action="store_true", help="only the same-process fps part")
    ap.add_argument(
        "--from-results", default=None, help="analyse runs recorded by an earlier call"
    )
    a = ap.parse_args()
    if a.skip_isolated:
        fps_same_process(a)
        return
    results = Path(a.results_dir or tempfile.mkdtemp(prefix="sam2tune-bounded-"))
    rows, reports = {}, {}
    if a.from_results:  # re-analyse runs this script recorded earlier (same figures, no rerun)
        results = Path(a.from_results)
        for p in sorted((results / "runs").glob("*/report.json")):
            rep = json.loads(p.read_text())
            r = rep["row"]
            for name, knobs in VARIANTS.items():
                if r["status"] == "ok" and all(
                    rep["config"]["knobs"][k] == v for k, v in knobs.__dict__.items()
                ):
                    rows[name], reports[name] = r, rep
    for name, knobs in ({} if a.from_results else VARIANTS).items():
        cfg = RunConfig(
            model=ModelConfig(image_size=a.image_size),
            video=VideoConfig(num_frames=a.frames, num_objects=a.objects),
            knobs=knobs,
            probe=ProbeConfig(),
            device=a.device,
            results_dir=str(results),
        )
        out = run_isolated(cfg)
        rows[name] = out.row
        reports[name] = json.loads(out.report_path.read_text())
        r = out.row
        print(
            f"{name:20s} status={r['status']} est_device={fmt_bytes(r['est_device_peak_bytes'])} "
            f"rss={fmt_bytes(r['peak_host_rss_bytes'])} fps={r['fps'] or float('nan'):.3f} "
            f"iou_ref={r['iou_ref_mean']}",
            flush=True,
        )
    s, rel, st, off = rows["stock"], rows["release"], rows["stream"], rows["stock+offload_video"]
    (ds, how), (dr, _), (dst, _) = device_peak(s), device_peak(rel), device_peak(st)
    # flat only after the last object entered and its read window filled
    warm = max(p["frame"] for p in reports["stream"]["prompts"]) + 17
    print(
        f"\ndevice={s['device']} ({s['device_name']}) weights={s['weights']} model={s['model']} "
        f"image_size={a.image_size} frames={a.frames} objects={a.objects}"
    )
    print(
        f"peak accelerator memory [{how}]: stock {fmt_bytes(ds)}, release {fmt_bytes(dr)}, "
        f"stream {fmt_bytes(dst)}"
    )
    print(f"  stock / release = {ds / dr:.2f}x   stock / stream = {ds / dst:.2f}x")
    print(
        f"host RSS [measured]: stock+offload_video {fmt_bytes(off['peak_host_rss_bytes'])}, "
        f"stream {fmt_bytes(st['peak_host_rss_bytes'])}  ->  "
        f"{off['peak_host_rss_bytes'] / st['peak_host_rss_bytes']:.2f}x"
    )
    print(
        f"fps [measured]: stream {st['fps']:.3f} / stock {s['fps']:.3f} = "
        f"{st['fps'] / s['fps']:.3f} "
        f"(release {rel['fps'] / s['fps']:.3f})"
    )
    print(
        f"masks identical to stock (iou_ref_mean): release {rel['iou_ref_mean']}, "
        f"stream {st['iou_ref_mean']}"
    )
    sl = {k: slope(reports[k]["timeline"], "device_resident_bytes", warm) for k in reports}
    hs = {k: slope(reports[k]["timeline"], "host_rss_bytes", warm) for k in reports}
    print(
        f"per-frame slope after frame {warm:d}, device-resident bytes/frame [measured census]: "
        f"{', '.join(f'{k} {v:,.0f}' for k, v in sl.items())}"
    )
    print(
        f"  release/stock = {sl['release'] / sl['stock']:.4f}, "
        f"stream/stock = {sl['stream'] / sl['stock']:.4f} (stock's frames are loaded up front, "
        "so its census slope is the per-frame state only)"
    )
    print(
        f"per-frame slope after frame {warm:d}, host RSS bytes/frame [measured]: "
        f"{', '.join(f'{k} {v:,.0f}' for k, v in hs.items())}"
    )
    # projection to a long video
    S1, N1, K1, S0 = 1024, 3600, 5, a.image_size
    est = reports["stream"]["estimate"]
    weights = est["weights_bytes"]
    act = (est["activation_peak_bytes"]) * (S1 / S0) ** 2
    frame = 3 * S1 * S1 * 4
    per_obj_frame = 64 * (S1 // 16) ** 2 * 2 + (S1 // 4) ** 2 * 4 + 256 * 4
    feats = rows["stock"]["cached_features_bytes"] * (S1 / S0) ** 2
    window = 16  # frames of state forward propagation still reads (max_obj_ptrs_in_encoder)
    stock_p = weights + N1 * frame + N1 * K1 * per_obj_frame + feats + act
    stream_p = weights + 2 * frame + (window + 1) * K1 * per_obj_frame + feats + act
    release_p = stream_p - 2 * frame + N1 * frame
    # what any SAM 2 step holds: weights, the current frame and its features, the step's
    # activations, and the memory bank forward propagation reads
    floor = weights + frame + feats + act + window * K1 * per_obj_frame
    print(
        f"\nprojected at {N1} frames, {S1} px, {K1} objects [predicted: exact per-frame sizes + "
        f"measured fixed part, activations scaled]:"
    )
    print(
        f"  stock {stock_p / 2**30:.1f} GiB, release {release_p / 2**30:.1f} GiB "
        f"(frames still loaded), stream {stream_p / MiB:.0f} MiB; floor (weights + current frame "
        f"and features + activations + memory bank) {floor / MiB:.0f} MiB"
    )
    print(
        f"  stock / stream = {stock_p / stream_p:.1f}x (goal >= 20x); stream / floor = "
        f"{stream_p / floor:.3f} (goal <= 1.15)"
    )
    print(f"\nrows: {results}  ({len(sam2tune.load_results(results))} runs)")
    if a.fps_rounds:
        fps_same_process(a)


def fps_same_process(a) -> None:
    """fps of stream and stock in ONE process, same model and video, alternating (the isolated
    runs above are sequential processes, so machine noise enters their fps ratio)."""
    import statistics

    import torch

    from sam2tune.adapter.build import build_predictor
    from sam2tune.config.schema import ScenarioConfig
    from sam2tune.runner.measure import propagate, resolve_device
    from sam2tune.scenario import make_prompts
    from sam2tune.video.sources import resolve_video

    dev = resolve_device(a.device)
    cache = Path(tempfile.mkdtemp(prefix="sam2tune-fps-"))
    video = resolve_video(VideoConfig(num_frames=a.fps_frames, num_objects=a.objects), cache)
    prompts = make_prompts(video, ScenarioConfig(), video.num_frames)
    built = build_predictor(ModelConfig(image_size=a.fps_image_size), KnobsConfig(), dev, cache)
    fps: dict[str, list[float]] = {"stock": [], "release": [], "stream": []}
    propagate(built.predictor, video, prompts, KnobsConfig(), dev, track_frames=2)  # warm-up
    for _ in range(a.fps_rounds):
        for name in fps:
            res = propagate(
                built.predictor, video, prompts, KnobsConfig(strategy=name), dev, track_frames=2
            )
            fps[name].append(res.fps)
    med = {k: statistics.median(v) for k, v in fps.items()}
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(
        f"\nsame-process fps, alternating x{a.fps_rounds} ({name}, {a.fps_frames} frames, "
        f"{a.fps_image_size} px, {a.objects} objects) [measured]: stock {med['stock']:.3f}, "
        f"release {med['release']:.3f}, stream {med['stream']:.3f}"
    )
    print(
        f"  fps stream / stock = {med['stream'] / med['stock']:.3f} (goal >= 0.97); "
        f"release / stock = {med['release'] / med['stock']:.3f}"
    )


if __name__ == "__main__":
    main()

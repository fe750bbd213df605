"""Can SAM 3's tracker (transformers' ``Sam3TrackerVideoModel``) build and run on this machine
within the time a test may take? Measures, side by side in one process, build time, parameter
count, and a few propagated frames of SAM 3's tracker and of SAM 2.1 tiny (transformers) at the
same input size, with random-init weights (no hub, no checkpoint).

    python experiments/bench_sam3_tracker.py [--image-size 1008] [--frames 3] [--out FILE.json]

Prints one JSON object: per model, build_s, params, weights_bytes, s_per_frame (propagation,
after the prompted frame), peak host RSS; the ratio SAM 3 / SAM 2.1 tiny.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _frames(folder: Path, n: int) -> str:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        a = (rng.random((240, 320, 3)) * 60).astype(np.uint8)
        a[60 + 4 * i : 140 + 4 * i, 60 + 6 * i : 160 + 6 * i] = (230, 70, 70)
        Image.fromarray(a).save(folder / f"{i:05d}.jpg", quality=95)
    return str(folder)


def _sam2_config(px: int):
    """SAM 2.1 tiny's transformers config at ``px`` (sam2tune's: every size-dependent field)."""
    from sam2tune.adapter.hf import hf_config
    from sam2tune.config.presets import model_preset
    from sam2tune.config.schema import KnobsConfig

    return hf_config(model_preset("sam2.1_tiny", image_size=px), KnobsConfig())


def _run(model, processor, video: str, frames: int) -> dict[str, float]:
    from sam2tune.adapter.hf import read_rgb_frames

    sess = processor.init_video_session(video=read_rgb_frames(video), inference_device="cpu")
    processor.add_inputs_to_inference_session(
        sess, frame_idx=0, obj_ids=1, input_boxes=[[[60.0, 60.0, 160.0, 140.0]]]
    )
    t0 = time.perf_counter()
    with torch.inference_mode():
        model(inference_session=sess, frame_idx=0)
    prompt_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    n = 0
    for out in model.propagate_in_video_iterator(sess, start_frame_idx=0):
        n += 1
        assert out.pred_masks.shape[0] == 1
    per = (time.perf_counter() - t1) / max(n, 1)
    return {"prompt_s": prompt_s, "s_per_frame": per, "frames": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=1008, help="SAM 3 (multiple of 14)")
    ap.add_argument("--sam2-image-size", type=int, default=1024, help="SAM 2.1 (multiple of 32)")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import psutil
    from transformers import (
        Sam2ImageProcessor,
        Sam2VideoModel,
        Sam2VideoProcessor,
        Sam2VideoVideoProcessor,
        Sam3TrackerVideoConfig,
        Sam3TrackerVideoModel,
        Sam3TrackerVideoProcessor,
    )

    res: dict[str, object] = {
        "figure": "measured",
        "weights": "random-init",
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "image_size": {"sam3_tracker": a.image_size, "sam2.1_tiny": a.sam2_image_size},
        "torch": torch.__version__,
    }
    import transformers

    res["transformers"] = transformers.__version__
    with tempfile.TemporaryDirectory() as d:
        video = _frames(Path(d), a.frames)
        for name, build, proc_cls, px in (
            ("sam3_tracker", lambda: Sam3TrackerVideoModel(Sam3TrackerVideoConfig()),
             Sam3TrackerVideoProcessor, a.image_size),
            ("sam2.1_tiny", lambda: Sam2VideoModel(_sam2_config(a.sam2_image_size)),
             Sam2VideoProcessor, a.sam2_image_size),
        ):
            size = {"height": px, "width": px}
            t0 = time.perf_counter()
            torch.manual_seed(0)
            model = build().eval()
            build_s = time.perf_counter() - t0
            if model.config.image_size != px:
                # SAM 3's config resizes its feature maps with image_size (a multiple of its 14-px
                # patches); SAM 2.1's default is 1024
                cfg = model.config
                cfg.image_size = px
                model = type(model)(cfg).eval()
            proc = proc_cls(
                image_processor=Sam2ImageProcessor(size=size),
                video_processor=Sam2VideoVideoProcessor(size=size),
            )
            params = sum(p.numel() for p in model.parameters())
            wbytes = sum(p.numel() * p.element_size() for p in model.parameters())
            r = _run(model, proc, video, a.frames)
            res[name] = {
                "build_s": round(build_s, 2),
                "params": int(params),
                "weights_bytes": int(wbytes),
                **{k: round(v, 3) for k, v in r.items()},
                "peak_rss_bytes": int(psutil.Process().memory_info().rss),
            }
            del model
            print(f"{name}: {res[name]}", file=sys.stderr, flush=True)
    s3, s2 = res["sam3_tracker"], res["sam2.1_tiny"]
    assert isinstance(s3, dict) and isinstance(s2, dict)
    ratio = s3["s_per_frame"] / s2["s_per_frame"]
    res["sam3_over_sam2_tiny_s_per_frame_native_sizes"] = round(ratio, 2)
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

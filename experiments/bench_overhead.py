"""Instrumentation overhead: propagation fps with sam2tune's default probes / fps of plain SAM 2.

Same process, same model, same video and prompts, plain and instrumented sessions side by side
in each round, their order alternating (plain first, then instrumented first: a machine whose
speed drifts during a round favours neither). Both fps figures are the same reading of the same
frames: the runner's steady fps (:func:`sam2tune.speed_model.timing.steady_timing`: the warm-up
frames left out, the median step) over every timed frame but the instrumented run's tracked
window (the last ``--track-frames`` frames, left out of both). The ratio is the median of the
rounds' paired ratios, with their range. Goal: ratio >= 0.97.

    .venv/bin/python experiments/bench_overhead.py [--frames 40] [--image-size 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sam2tune.adapter.build import build_predictor
from sam2tune.adapter.session import FrameStep, Session
from sam2tune.config.schema import KnobsConfig, ModelConfig, ScenarioConfig, VideoConfig
from sam2tune.provenance import cpu_name
from sam2tune.runner.measure import propagate, resolve_device
from sam2tune.scenario import make_prompts
from sam2tune.speed_model.timing import steady_timing
from sam2tune.video.sources import resolve_video


def plain_fps(predictor, video, prompts, knobs, skip_last: int) -> float:
    """SAM 2's own calls (init_state, prompts, propagate_in_video), timed per frame, no probes."""
    sess = Session(predictor, video.sam2_path, knobs)
    sess.init()
    times = []
    events = sess.track(prompts)
    while True:
        t0 = time.perf_counter()
        try:
            ev = next(events)
        except StopIteration:
            break
        if isinstance(ev, FrameStep):
            times.append(time.perf_counter() - t0)
    kept = times[: len(times) - skip_last]
    fps = steady_timing([round(t, 6) for t in kept]).fps  # the instrumented run's reading
    assert fps is not None
    return fps


def _median_ms(values: tuple) -> str:
    """The median of one figure over the rounds, in ms ("n/a" where a round lacks it)."""
    return "n/a" if None in values else f"{statistics.median(values) * 1e3:.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--track-frames", type=int, default=2)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    dev = resolve_device(a.device)
    cache = Path(tempfile.mkdtemp(prefix="sam2tune-bench-"))
    video = resolve_video(VideoConfig(num_frames=a.frames, num_objects=a.objects), cache)
    prompts = make_prompts(video, ScenarioConfig(), video.num_frames)
    knobs = KnobsConfig()
    built = build_predictor(ModelConfig(image_size=a.image_size), knobs, dev, cache)
    plain, probed, split = [], [], []
    # warm-up (allocator, caches) not counted
    plain_fps(built.predictor, video, prompts, knobs, a.track_frames)
    def instrumented() -> float:
        res = propagate(built.predictor, video, prompts, knobs, dev, track_frames=a.track_frames)
        split.append((res.encoder_s, res.tracking_s, res.host_s))
        assert res.fps is not None
        return float(res.fps)

    for i in range(a.rounds):
        if i % 2 == 0:
            plain.append(plain_fps(built.predictor, video, prompts, knobs, a.track_frames))
            probed.append(instrumented())
        else:
            probed.append(instrumented())
            plain.append(plain_fps(built.predictor, video, prompts, knobs, a.track_frames))
        print(f"round {i + 1} ({'plain' if i % 2 == 0 else 'instrumented'} first): plain "
              f"{plain[-1]:.3f} fps, instrumented {probed[-1]:.3f} fps, ratio "
              f"{probed[-1] / plain[-1]:.3f}")
    ratios = [b / p for p, b in zip(plain, probed, strict=True)]
    ratio = statistics.median(ratios)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    print(
        f"\ndevice={dev.type} ({name}) weights={built.weights} model=sam2.1_tiny "
        f"image_size={a.image_size} frames={a.frames} objects={a.objects} rounds={a.rounds}\n"
        f"median fps: plain SAM 2 {statistics.median(plain):.3f}, with default probes "
        f"{statistics.median(probed):.3f}  ->  ratio {ratio:.3f} (median of the rounds' paired "
        f"ratios, range {min(ratios):.3f}-{max(ratios):.3f}; goal >= 0.97) [measured]"
    )
    enc, trk, host = (_median_ms(x) for x in zip(*split, strict=True))
    print(
        f"instrumented step, steady medians: encoder {enc} + tracking {trk}; probes' host work "
        f"between steps {host} (outside fps) [measured]"
    )


if __name__ == "__main__":
    main()

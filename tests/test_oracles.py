"""Tests with independent oracles: every expected value is computed by hand (arithmetic written
out in the comments) or by another method than the code under test uses.

1. the report's conclusions on a hand-made results table (exact sentences);
2. every experiment preset run for real on the CPU (reduced to one small point each);
3. the reference cache: what its key covers, and a damaged cache file recomputed;
4. ``classify_failure`` on real error texts (several raised for real here);
5. ``sam2tune tune`` with a small budget, checked against the confirmation run's own figure.

Real runs: SAM 2.1 tiny, random-init, 256 px, CPU, a few frames of a small synthetic video.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, sam2tune_cmd
from PIL import Image

import sam2tune
from sam2tune.analysis.conclusions import all_conclusions
from sam2tune.record import COLUMNS

MiB = 2**20  # written out here on purpose: the oracle does not borrow sam2tune.units
S = 256  # the runs' model.image_size
FRAME_BYTES = 3 * S * S * 4  # one frame in SAM 2's cache: 3 x S x S float32 = 786,432 B


# --------------------------------------------------------------------------------------------
# 1. conclusions on a hand-made table
# --------------------------------------------------------------------------------------------


def _row(**kw) -> dict:
    """One row in the shape ``sam2tune.load_results`` returns (every column, defaults = a stock
    ok run on the CPU with random-init weights), with ``kw`` on top."""
    r: dict = {c.name: None for c in COLUMNS}
    r.update(
        status="ok",
        weights="random-init",
        device="cpu",
        model="sam2.1_tiny",
        offload_video_to_cpu=False,
        offload_state_to_cpu=False,
        async_loading_frames=False,
        max_cond_frames_in_attn=-1,
        dtype="float32",
        predictor="per_object",
        vos_optimized=False,
        strategy="stock",
        segment_frames=0,
        prompt="box",
        reannotate_every=0,
        num_cond_frames=2,
        fps=5.0,
    )
    r.update(kw)
    return r


def _length_rows(size, objects, frames, peak, host, iou=1.0, cuda=None, **knobs) -> list[dict]:
    """Rows whose device peak / host RSS are the given functions of the frame count."""
    return [
        _row(
            image_size=size,
            num_objects=objects,
            num_frames=f,
            est_device_peak_bytes=int(peak(f)),
            cuda_max_allocated_bytes=None if cuda is None else int(cuda(f)),
            peak_host_rss_bytes=int(host(f)),
            activation_peak_bytes=16 * MiB,
            iou_ref_mean=iou(f) if callable(iou) else iou,
            **knobs,
        )
        for f in frames
    ]


def _hand_made_table() -> pd.DataFrame:
    rows = []
    # A. 256 px, 2 objects, estimated (CPU rows).
    # stock: peak = 150 MiB + 1 MiB x frames   -> 1 MiB/frame = 1,048,576 B/frame
    #                                              = 100.0 MiB per 100 frames
    #        host = 900 MiB + 2 MiB x frames   -> 200.0 MiB per 100 frames (3 lengths: stated)
    rows += _length_rows(
        256, 2, [10, 20, 40], lambda f: 150 * MiB + f * MiB, lambda f: 900 * MiB + 2 * f * MiB
    )
    # offload_video: peak = 150 MiB + 0.25 MiB x frames -> 262,144 B/frame = 25.0 MiB per 100
    #        host = 900 MiB + 2.75 MiB x frames -> 275.0 MiB per 100 frames
    #        removed vs stock: (1 - 0.25) MiB x 100 = 75.0 MiB per 100 frames; 1 / 0.25 = 4x
    rows += _length_rows(
        256,
        2,
        [10, 20, 40],
        lambda f: 150 * MiB + f * MiB / 4,
        lambda f: 900 * MiB + 2.75 * f * MiB,
        offload_video_to_cpu=True,
    )
    # stream: only two lengths, peak = 160 MiB + 0.1 MiB x frames
    #        -> 0.1 x 1,048,576 = 104,857.6 B/frame ("104,858"), 10.0 MiB per 100 frames;
    #        host slope not stated (2 lengths < 3); removed (1 - 0.1) x 100 = 90.0 MiB,
    #        1 / 0.1 = 10x flatter; agreement 1.0 on one run and 0.9987 on the other
    rows += _length_rows(
        256,
        2,
        [10, 40],
        lambda f: 160 * MiB + f * MiB / 10,
        lambda f: 800 * MiB + f * MiB,
        iou=lambda f: 1.0 if f == 10 else 0.9987,
        strategy="stream",
    )
    # a failed stock point: absurd figures that would wreck the stock slope if it were used
    rows.append(
        _row(
            status="oom",
            error="RuntimeError: CUDA out of memory.",
            image_size=256,
            num_objects=2,
            num_frames=80,
            est_device_peak_bytes=50 * 1024 * MiB,
            peak_host_rss_bytes=64 * 1024 * MiB,
            iou_ref_mean=None,
        )
    )
    # a lossy setting (max_cond=2, one length): no slope, no lossless sentence
    rows.append(
        _row(
            image_size=256,
            num_objects=2,
            num_frames=20,
            max_cond_frames_in_attn=2,
            est_device_peak_bytes=165 * MiB,
            peak_host_rss_bytes=940 * MiB,
            activation_peak_bytes=12 * MiB,
            iou_ref_mean=0.9,
        )
    )
    # B. 512 px, 1 object, on CUDA: the measured figure must win over the estimate.
    # cuda = 400 MiB + 3 MiB x frames -> 300.0 MiB per 100 frames, 3,145,728 B/frame
    # (the estimate 300 MiB + 2 MiB x frames would say 200.0: wrong figure)
    # host = 2048 MiB + 1 MiB x frames -> 100.0 MiB per 100 frames
    rows += _length_rows(
        512,
        1,
        [10, 20, 30],
        lambda f: 300 * MiB + 2 * f * MiB,
        lambda f: 2048 * MiB + f * MiB,
        cuda=lambda f: 400 * MiB + 3 * f * MiB,
        device="cuda",
    )
    # C. conditioning frames: 384 px, 2 objects, 24 frames, re-prompted every 3 frames,
    # 8 prompted frames; max_cond -1 / 4 / 2 -> attended 8 / 4 / 2.
    # peak = 200 MiB + 3 MiB x attended -> 3.00 MiB per extra attended frame
    # activations = 50 MiB + 2.5 MiB x attended -> 2.50 MiB
    # the fewest attended (2) has agreement 0.95 -> "attending 2 of them kept agreement 0.950"
    for cap, att, iou in ((-1, 8, 1.0), (4, 4, 0.98), (2, 2, 0.95)):
        rows.append(
            _row(
                image_size=384,
                num_objects=2,
                num_frames=24,
                num_cond_frames=8,
                reannotate_every=3,
                max_cond_frames_in_attn=cap,
                est_device_peak_bytes=200 * MiB + att * 3 * MiB,
                activation_peak_bytes=50 * MiB + int(att * 2.5 * MiB),
                peak_host_rss_bytes=1000 * MiB,
                iou_ref_mean=iou,
                fps=2.0,
            )
        )
    return pd.DataFrame(rows)


def test_conclusions_state_the_hand_computed_numbers():
    df = _hand_made_table()
    out = all_conclusions(df)
    # 6 + 2 + 1 + 1 + 3 + 3 = 16 rows, 15 ok and 1 oom
    expected = [
        "16 runs recorded: ok 15, oom 1.",
        "At image_size 256 with 2 objects, stock grows the accelerator peak by 100.0 MiB per 100 "
        "frames (1,048,576 B/frame, estimated; host RSS 200.0 MiB per 100 frames, measured; "
        "3 runs).",
        "At image_size 256 with 2 objects, offload_video grows the accelerator peak by 25.0 MiB "
        "per 100 frames (262,144 B/frame, estimated; host RSS 275.0 MiB per 100 frames, "
        "measured; 3 runs).",
        "At image_size 256 with 2 objects, stream grows the accelerator peak by 10.0 MiB per 100 "
        "frames (104,858 B/frame, estimated; host RSS slope: not enough data (2 lengths; it "
        "needs 3); 2 runs).",
        "At image_size 512 with 1 objects, stock grows the accelerator peak by 300.0 MiB per 100 "
        "frames (3,145,728 B/frame, measured, CUDA; host RSS 100.0 MiB per 100 frames, "
        "measured; 3 runs).",
        "offload_video removed 75.0 MiB of accelerator memory per 100 frames at image_size 256 "
        "(2 objects) compared with stock (4x flatter).",
        "stream removed 90.0 MiB of accelerator memory per 100 frames at image_size 256 "
        "(2 objects) compared with stock (10x flatter).",
        "offload_video: agreement with the reference 1.0000 over 3 runs (identical masks).",
        "stream: agreement with the reference 0.9987 over 2 runs (NOT identical).",
        "With 8 prompted frames (24 frames, 2 objects, image_size 384), each extra conditioning "
        "frame in attention cost 3.00 MiB of accelerator peak (estimated; step activations "
        "2.50 MiB, measured); attending 2 of them kept agreement 0.950 with the all-frames "
        "reference.",
    ]
    for sentence in expected:
        assert sentence in out, f"missing: {sentence!r}\n got: {json.dumps(out, indent=1)}"
    # the slopes of groups that do not exist are not invented
    assert not any("max_cond=2 grows" in s or "max_cond=2:" in s for s in out)
    assert not any(s.startswith("stock:") for s in out)  # stock is not a lossless knob
    assert not any("could not be computed" in s for s in out), out
    # resolution, stock medians per size (accelerator peak, fps, agreement):
    #   256: peaks 160, 170, 190 MiB -> median 170; fps 5.00; agreement 1.000
    #   384: one stock run (max_cond -1): 200 + 3 x 8 = 224 MiB; fps 2.00; agreement 1.000
    #   512: CUDA peaks 430, 460, 490 MiB -> median 460; fps 5.00; agreement 1.000
    assert (
        "Resolution (stock; accelerator peak, fps, agreement with the reference): "
        "256 px: 170 MiB, 5.00 fps, agreement 1.000; 384 px: 224 MiB, 2.00 fps, agreement 1.000; "
        "512 px: 460 MiB, 5.00 fps, agreement 1.000."
    ) in out
    assert out[-1].startswith("Weights are random-init")


@pytest.mark.parametrize(
    "lengths",
    [
        # with these lengths numpy's least-squares slope of a flat line comes out +1e-8 / -1e-9
        pytest.param([6, 12], id="6,12"),
        pytest.param([8, 16, 32], id="8,16,32"),
    ],
)
def test_a_flat_setting_is_stated_as_flat(lengths):
    # stock: 1 MiB per frame; stream: exactly flat at 182,345,678 B (integer census bytes)
    # hand: stream grows 0.0 MiB per 100 frames (0 B/frame); removes 100.0 MiB per 100 frames;
    # a ratio of a slope to zero is no finding, so no "x flatter"
    rows = _length_rows(256, 2, lengths, lambda f: 150 * MiB + f * MiB, lambda f: 900 * MiB)
    rows += _length_rows(
        256, 2, lengths, lambda f: 182_345_678, lambda f: 900 * MiB, strategy="stream"
    )
    out = all_conclusions(pd.DataFrame(rows))
    grows = next(s for s in out if s.startswith("At image_size 256 with 2 objects, stream"))
    assert "by 0.0 MiB per 100 frames (0 B/frame" in grows, grows
    removed = next(s for s in out if s.startswith("stream removed"))
    assert removed.startswith("stream removed 100.0 MiB") and "flatter" not in removed, removed


# --------------------------------------------------------------------------------------------
# 2. every experiment preset, run for real (one small point each)
# --------------------------------------------------------------------------------------------

PRESETS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))

#: the point of each preset that is run: overrides on top of the preset (sweep axes reduced to
#: one of the preset's own values, except the length, shrunk to a few frames). Axes not named
#: take the preset's first value.
POINT: dict[str, dict[str, str]] = {
    "long_video": {"video.num_frames": "4"},  # 3 objects kept
    "many_prompts": {"video.num_frames": "6"},  # re-prompt every 4: frame 4 re-prompted
    "offload_all": {"video.num_frames": "4"},
    "sweep_bounded": {"video.num_frames": "4", "knobs.strategy": "stream"},
    "sweep_calibration": {
        "video.num_frames": "4",
        "model.image_size": "256",
        "video.num_objects": "1",
        "knobs.offload_video_to_cpu": "true",
    },
    "sweep_cond_frames": {"video.num_frames": "7", "knobs.max_cond_frames_in_attn": "2"},
    "sweep_demo": {
        "video.num_frames": "4",
        "knobs.offload_video_to_cpu": "true",
        "knobs.strategy": "stream",
    },
    "sweep_memory_vs_length": {
        "video.num_frames": "4",
        "knobs.offload_video_to_cpu": "false",
        "knobs.offload_state_to_cpu": "true",
    },
    "sweep_object_count": {
        "video.num_frames": "4",
        "video.num_objects": "2",
        "knobs.predictor": "legacy_batched",
    },
    "sweep_resolution": {"video.num_frames": "4", "model.image_size": "256"},
    "sweep_implementations": {
        "video.num_frames": "8",
        "impl": "transformers",
        "knobs.offload_state_to_cpu": "true",
    },
}

#: config groups chosen by name (``impl=transformers``): recorded as ``<group>.name``
_GROUP_NAMES = {"impl"}

#: points whose knobs are all lossless (bit-identical masks): agreement must be exactly 1.0
LOSSLESS_POINTS = {"offload_all", "sweep_bounded", "sweep_demo", "sweep_memory_vs_length"}


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _dig(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_every_experiment_preset_runs_for_real(name, tmp_path, cache_root):
    """``sam2tune run [-m] experiment=NAME`` on one small point of the preset: a row per point,
    status ok, every figure there, and the preset's settings in the recorded config (read from
    the YAML file itself, not through Hydra)."""
    preset = yaml.safe_load((REPO / "conf" / "experiment" / f"{name}.yaml").read_text())
    sweep = {
        str(k): [yaml.safe_load(v) for v in str(vals).split(",")]
        for k, vals in ((preset.get("hydra") or {}).get("sweeper", {}).get("params") or {}).items()
    }
    point = dict(POINT.get(name, {"video.num_frames": "4"}))
    for key, values in sweep.items():
        if key == "video.num_frames":  # the length axis is shrunk, on purpose
            continue
        if key in point:  # a real point of the preset's own sweep
            assert yaml.safe_load(point[key]) in values, (name, key, values)
        else:
            point[key] = str(values[0]).lower() if isinstance(values[0], bool) else str(values[0])
    results = tmp_path / "r"
    cmd = (
        sam2tune_cmd()
        + ["run"]
        + (["-m"] if sweep else [])
        + [
            f"experiment={name}",
            "device=cpu",
            "video.height=96",
            "video.width=128",
            f"cache_dir={cache_root}",
            f"results_dir={results}",
            *(f"{k}={v}" for k, v in point.items()),
        ]
    )
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    if sweep:
        assert "sweep summary: 1 points: ok=1" in p.stderr, p.stderr[-2000:]
    df = sam2tune.load_results(results)
    assert len(df) == 1, df  # every point recorded one row
    r = df.iloc[0]
    assert r.status == "ok" and r.error is None, r.error
    # the preset's settings and the point's overrides are what ran
    rep = json.loads((results / "runs" / r.run_id / "report.json").read_text())
    expected = {k: v for k, v in _flatten(preset).items() if not k.startswith("hydra.")}
    expected.update({k: yaml.safe_load(v) for k, v in point.items()})
    for key, value in expected.items():
        path = f"{key}.name" if key in _GROUP_NAMES else key
        assert _dig(rep["config"], path) == value, (key, value)
    # every figure present and plausible
    assert r.weights_bytes > 100 * MiB  # SAM 2.1 tiny: ~149 MiB of fp32 parameters
    assert r.est_device_peak_bytes > r.weights_bytes + r.activation_peak_bytes > r.weights_bytes
    assert r.peak_host_rss_bytes > r.weights_bytes
    assert r.state_bytes > 0 and r.cached_features_bytes > 0 and r.frames_bytes > 0
    assert r.fps > 0 and r.init_s > 0 and r.total_s > 0
    n = rep["config"]["video"]["num_frames"]
    assert r.num_frames == n and [t["frame"] for t in rep["timeline"]] == list(range(n))
    if rep["config"]["knobs"]["strategy"] == "stock":
        # the whole video is in SAM 2's frame cache: 3 x S x S float32 per frame
        s = rep["config"]["model"]["image_size"]
        assert r.frames_bytes == n * 3 * s * s * 4
    if rep["config"]["probe"]["reference"]:
        assert 0.0 <= r.iou_ref_mean <= 1.0
        ref_size = rep["config"]["probe"]["reference_image_size"]
        assert rep["reference"]["image_size"] == (ref_size or rep["config"]["model"]["image_size"])
    else:
        assert pd.isna(r.iou_ref_mean)
    if name in LOSSLESS_POINTS:
        assert r.iou_ref_mean == 1.0
    if rep["config"]["scenario"]["reannotate_every"]:
        assert r.num_cond_frames > r.num_objects  # re-prompted frames are conditioning frames


@pytest.mark.slow
def test_a_study_report_states_the_slopes_of_its_own_rows(tmp_path, cache_root):
    """``sam2tune study memory_vs_length`` reduced to 2 lengths x offload_video off/on: the
    report's sentences carry the slopes computed here by hand from the four recorded rows."""
    results = tmp_path / "study"
    p = subprocess.run(
        sam2tune_cmd()
        + [
            "study",
            "memory_vs_length",
            "device=cpu",
            "video.height=64",
            "video.width=64",
            "video.num_objects=1",
            "video.num_frames=3,5",
            "knobs.offload_state_to_cpu=false",
            f"cache_dir={cache_root}",
            f"results_dir={results}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    df = sam2tune.load_results(results)
    assert len(df) == 4 and set(df.status) == {"ok"}

    def peak(frames: int, offload: bool) -> int:
        row = df[(df.num_frames == frames) & (df.offload_video_to_cpu == offload)]
        assert len(row) == 1
        return int(row.iloc[0].est_device_peak_bytes)

    # stock keeps every frame on the device: 2 more frames = 2 x 786,432 B more frame cache
    fb = {
        int(r.num_frames): int(r.frames_bytes) for r in df[~df.offload_video_to_cpu].itertuples()
    }
    assert fb[5] - fb[3] == 2 * FRAME_BYTES
    # slopes from two points, by hand: (peak(5) - peak(3)) / (5 - 3)
    stock = (peak(5, False) - peak(3, False)) / 2
    off = (peak(5, True) - peak(3, True)) / 2
    md = (results / "report" / "report.md").read_text()

    def stated(setting: str) -> tuple[float, float]:
        m = re.search(
            rf"At image_size 256 with 1 objects, {setting} grows the accelerator peak by "
            r"(-?[\d.]+) MiB per 100 frames \((-?[\d,]+) B/frame, estimated",
            md,
        )
        assert m, (setting, md)
        return float(m.group(1)), float(m.group(2).replace(",", ""))

    for setting, slope in (("stock", stock), ("offload_video", off)):
        mib, b = stated(setting)
        assert abs(b - slope) <= 0.5 and abs(mib - slope * 100 / MiB) <= 0.05, (setting, slope)
    m = re.search(r"offload_video removed (-?[\d.]+) MiB of accelerator memory per 100 frames", md)
    assert m and abs(float(m.group(1)) - (stock - off) * 100 / MiB) <= 0.05
    assert (
        "offload_video: agreement with the reference 1.0000 over 2 runs (identical masks)." in md
    )
    assert "4 runs recorded: ok 4." in md
    # every figure the study names is written and decodes
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "s", REPO / "experiments" / "memory_vs_length.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for fig in mod.FIGURES:
        png = results / "report" / "figures" / f"{fig}.png"
        with Image.open(png) as im:
            im.load()
            assert im.size[0] > 100 and im.size[1] > 100
        assert f"![{fig}](figures/{fig}.png)" in md


# --------------------------------------------------------------------------------------------
# 3. the reference cache
# --------------------------------------------------------------------------------------------


def _key(cache_root: Path, *overrides: str, weights: str = "random-init", prompts_edit=None):
    from sam2tune.config.store import compose_run
    from sam2tune.runner.reference import reference_key
    from sam2tune.scenario import make_prompts
    from sam2tune.video.sources import resolve_video

    cfg = compose_run(
        [
            "device=cpu",
            "model.image_size=256",
            "video.num_frames=4",
            "video.height=96",
            "video.width=128",
            f"cache_dir={cache_root}",
            *overrides,
        ]
    )
    video = resolve_video(cfg.video, cache_root)
    prompts = make_prompts(video, cfg.scenario, video.num_frames)
    if prompts_edit is not None:
        prompts_edit(prompts)
    return reference_key(cfg, video, weights, prompts)


def _nudge_box(prompts) -> None:
    prompts[0].box = [prompts[0].box[0] + 1.0, *prompts[0].box[1:]]


@pytest.mark.slow
def test_reference_key_covers_what_defines_the_reference_masks(cache_root, tmp_path):
    base = _key(cache_root)
    assert base == _key(cache_root)  # deterministic
    # what defines the reference masks: each of these gives another key
    changed = {
        "prompt kind": _key(cache_root, "scenario.prompt=points"),
        "re-prompting": _key(cache_root, "scenario.reannotate_every=2"),
        "one box moved by 1 px": _key(cache_root, prompts_edit=_nudge_box),
        "video seed (other frames)": _key(cache_root, "video.seed=1"),
        "video length": _key(cache_root, "video.num_frames=5"),
        "model": _key(cache_root, "model=sam2_tiny"),
        "weights seed": _key(cache_root, "model.weights_seed=1"),
        "a checkpoint": _key(cache_root, weights="sha256:" + "ab" * 32),
        "image size": _key(cache_root, "model.image_size=512"),
    }
    for what, key in changed.items():
        assert key != base, what
    assert len(set(changed.values())) == len(changed)  # and all different from each other
    # memory knobs (and limits, probes, where results go) do not: the reference is the run with
    # every knob off, the same for all of them
    for ov in [
        "knobs.offload_video_to_cpu=true",
        "knobs.offload_state_to_cpu=true",
        "knobs.strategy=release",
        "knobs.strategy=stream",
        "knobs.max_cond_frames_in_attn=2",
        "knobs.predictor=legacy_batched",
        "knobs.dtype=bfloat16",
        "knobs.segment_frames=2",
        "knobs.async_loading_frames=true",
        "limits.host_memory_budget=8GiB",
        "probe.track_frames=1",
        f"results_dir={tmp_path}",
    ]:
        assert _key(cache_root, ov) == base, ov
    # the reference's resolution: a resolution study's runs at 256 and 384 px share the key of
    # their one 512 px reference, which is the key of a plain 512 px run
    ref512 = _key(cache_root, "probe.reference_image_size=512")
    assert ref512 != base
    assert ref512 == _key(cache_root, "model.image_size=384", "probe.reference_image_size=512")
    assert ref512 == changed["image size"]


def test_reference_key_follows_the_frames_of_a_jpeg_folder(cache_root, tmp_path):
    """The same folder with one frame's content rewritten is another video."""
    from sam2tune.config.store import compose_run
    from sam2tune.video.sources import resolve_video

    cfg = compose_run(["video.num_frames=4", "video.height=96", "video.width=128"])
    src = Path(resolve_video(cfg.video, cache_root).sam2_path)
    jpg, ann = tmp_path / "jpg", src.parent / "Annotations"
    jpg.mkdir()
    for p in sorted(src.glob("*.jpg")):
        (jpg / p.name).write_bytes(p.read_bytes())
    video = ["video=jpeg_dir", f"video.path={jpg}", f"video.annotations={ann}"]
    before = _key(cache_root, *video)
    im = np.array(Image.open(jpg / "00002.jpg"))
    Image.fromarray(255 - im).save(jpg / "00002.jpg", quality=90)  # other pixels
    assert _key(cache_root, *video) != before


SHRINK = ["video.num_frames=3", "video.height=64", "video.width=64"]


def _offload_run(small, res: Path) -> dict:
    """A lossless run (offload_video_to_cpu=true) into ``res``: its report."""
    from sam2tune.runner.launcher import run_isolated

    out = run_isolated(small(*SHRINK, "knobs.offload_video_to_cpu=true", results=res))
    assert out.row["status"] == "ok", out.row["error"]
    # lossless: the offloaded run agrees exactly with the reference, cached or recomputed
    assert out.row["iou_ref_mean"] == 1.0
    rep = json.loads(out.report_path.read_text())
    rep["_log"] = (out.report_path.parent / "run.log").read_text()
    return rep


@pytest.mark.slow
def test_a_damaged_reference_cache_is_recomputed_and_said_so(small, tmp_path, cache_root):
    from sam2tune.runner.launcher import run_isolated

    res = tmp_path / "res"
    stock = run_isolated(small(*SHRINK, results=res))
    key = json.loads(stock.report_path.read_text())["reference"]["key"]
    # the key the run recorded is the one computed here for the same inputs
    assert key == _key(cache_root, *SHRINK)
    cache = res / ".cache" / "refs" / f"{key}.npz"
    assert sorted(p.name for p in cache.parent.glob("*.npz")) == [cache.name]
    with np.load(cache) as z:  # the stock run's own masks (it is its own reference)
        masks0 = {k: z[k].copy() for k in z.files}

    cache.write_bytes(os.urandom(3000))  # garbage in the file
    rep = _offload_run(small, res)
    assert rep["reference"]["key"] == key  # offloading does not change the reference
    assert rep["reference"]["cache_error"] and rep["reference"]["cached"] is False
    assert rep["reference"].get("computed_s", 0) > 0
    assert "recomputing" in rep["_log"]
    with np.load(cache) as z:  # rewritten: bit-identical to the stock run's masks
        assert sorted(z.files) == sorted(masks0)
        for k in masks0:
            assert np.array_equal(z[k], masks0[k]), k


def test_a_garbage_mask_file_is_reported_as_damaged(tmp_path):
    from sam2tune.metrics import MaskSet

    path = tmp_path / "ref.npz"
    path.write_bytes(b"not a mask file " * 200)
    with pytest.raises(ValueError) as e:
        MaskSet.load(path, "somekey")
    assert "damaged" in str(e.value) and "allow_pickle" not in str(e.value)


@pytest.mark.slow
def test_a_reference_cached_under_another_key_is_recomputed_and_an_intact_one_is_used(
    small, tmp_path
):
    res = tmp_path / "res"
    rep = _offload_run(small, res)  # no cache yet: computed, no error
    assert rep["reference"]["cached"] is False and "cache_error" not in rep["reference"]
    cache = res / ".cache" / "refs" / f"{rep['reference']['key']}.npz"
    # a valid mask file saved under another key (e.g. another video's masks) is not trusted
    np.savez_compressed(cache, _shape=np.array([64, 64]), _key=np.array("someotherkey"))
    rep = _offload_run(small, res)
    assert "someotherkey" in rep["reference"]["cache_error"]
    assert rep["reference"].get("computed_s", 0) > 0
    # now intact: read from the cache, nothing recomputed
    rep = _offload_run(small, res)
    assert rep["reference"]["cached"] is True and "cache_error" not in rep["reference"]
    assert "computed_s" not in rep["reference"]


# --------------------------------------------------------------------------------------------
# 4. classify_failure on real error texts
# --------------------------------------------------------------------------------------------


def _raised(fn) -> BaseException:
    try:
        fn()
    except BaseException as e:  # noqa: BLE001
        return e
    raise AssertionError("did not raise")


CUDA_OOM = (
    "CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 79.19 GiB "
    "of which 3.44 MiB is free. Process 2911 has 79.18 GiB memory in use. Of the allocated "
    "memory 78.30 GiB is allocated by PyTorch, and 191.25 MiB is reserved by PyTorch but "
    "unallocated. If reserved but unallocated memory is large try setting "
    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
    "documentation for Memory Management  "
    "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)

CASES = [
    # (exception, under a host budget, expected)
    pytest.param(torch.OutOfMemoryError(CUDA_OOM), False, "oom", id="torch.OutOfMemoryError"),
    pytest.param(RuntimeError(CUDA_OOM), False, "oom", id="CUDA OOM as RuntimeError (torch<2.5)"),
    pytest.param(
        RuntimeError(
            "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at "
            "some other API call, so the stacktrace below might be incorrect."
        ),
        False,
        "oom",
        id="CUDA error: out of memory",
    ),
    pytest.param(
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        False,
        "oom",
        id="cuBLAS alloc failed",
    ),
    pytest.param(
        RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), False, "oom", id="cuDNN alloc"
    ),
    pytest.param(
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
            "you tried to allocate 1073741824 bytes."
        ),
        True,
        "oom",
        id="DefaultCPUAllocator not enough memory",
    ),
    pytest.param(
        # raised for real: an 8 PiB tensor on the CPU ("can't allocate memory ... Error code 12")
        _raised(lambda: torch.empty(2**53, dtype=torch.uint8)),
        False,
        "oom",
        id="real torch CPU allocation failure",
    ),
    pytest.param(
        # raised for real: numpy's _ArrayMemoryError ("Unable to allocate 8.00 PiB for an array")
        _raised(lambda: np.empty(2**53, np.uint8)),
        False,
        "oom",
        id="real numpy allocation failure",
    ),
    pytest.param(
        # the same text after a wrapper lost the type (e.g. Hydra's InstantiationException)
        RuntimeError(
            "Error in call to target 'x': Unable to allocate 1.00 GiB for an array with shape "
            "(268435456,) and data type float32"
        ),
        False,
        "oom",
        id="numpy text, type lost",
    ),
    pytest.param(RuntimeError("std::bad_alloc"), True, "oom", id="std::bad_alloc"),
    pytest.param(OSError(12, "Cannot allocate memory"), True, "oom", id="ENOMEM"),
    pytest.param(MemoryError(), True, "oom", id="bare MemoryError"),
    pytest.param(
        RuntimeError("could not create a primitive"), True, "oom", id="oneDNN under a budget"
    ),
    pytest.param(
        SystemError(
            "<built-in method view of Tensor object> returned NULL without setting an exception"
        ),
        True,
        "oom",
        id="CPython NULL under a budget",
    ),
    # not memory
    pytest.param(
        RuntimeError("could not create a primitive"), False, "error", id="oneDNN, no budget"
    ),
    pytest.param(
        SystemError(
            "<built-in method view of Tensor object> returned NULL without setting an exception"
        ),
        False,
        "error",
        id="CPython NULL, no budget",
    ),
    pytest.param(
        # raised for real: set_per_process_memory_fraction given 'cuda' without an index
        _raised(lambda: torch.cuda._utils._get_device_index(torch.device("cuda"), optional=False)),
        True,
        "error",
        id="real device-index error",
    ),
    pytest.param(
        ValueError("Expected a torch.device with a specified index or an integer, but got:cuda"),
        False,
        "error",
        id="device-index error text",
    ),
    pytest.param(_raised(lambda: {}["maskmem_features"]), True, "error", id="real KeyError"),
    pytest.param(
        _raised(
            lambda: torch.zeros(3).__setitem__(torch.tensor([True, False, True]), torch.ones(3))
        ),
        True,
        "error",
        id="real shape mismatch",
    ),
    pytest.param(
        _raised(lambda: torch.ones(2, 3) @ torch.ones(2, 3)), False, "error", id="real matmul"
    ),
    pytest.param(
        RuntimeError(
            "CUDA error: an illegal memory access was encountered\nCompile with "
            "`TORCH_USE_CUDA_DSA` to enable device-side assertions."
        ),
        False,
        "error",
        id="illegal memory access (a crash, not OOM)",
    ),
    pytest.param(
        RuntimeError(
            "Expected all tensors to be on the same device, but found at least two devices, "
            "cuda:0 and cpu!"
        ),
        True,
        "error",
        id="device mismatch",
    ),
]


@pytest.mark.parametrize("exc,budget,expected", CASES)
def test_classify_failure_on_real_error_texts(exc, budget, expected):
    from sam2tune.runner.child import classify_failure

    assert classify_failure(exc, host_budget=budget) == expected, f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------
# 5. sam2tune tune, checked against what the confirmation run measured
# --------------------------------------------------------------------------------------------

TUNE_WORKLOAD = [
    "device_kind=cpu",
    "host_budget=20GiB",
    "workload.model=sam2.1_tiny",
    "workload.image_size=256",
    "workload.num_frames=8",
    "workload.num_objects=1",
    # the confirmation runs' video size (the output-mask term is at the video's resolution)
    "workload.video_height=270",
    "workload.video_width=480",
    "n_trials=30",
    "confirm=1",
    "confirm_frames=8",
]


def _tune(results: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        sam2tune_cmd() + ["tune", f"results_dir={results}", *TUNE_WORKLOAD, *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=results.parent,
    )


@pytest.mark.slow
def test_tune_best_fits_the_budget_by_the_runs_own_figure(tmp_path):
    results = tmp_path / "tune"
    results.mkdir()
    # 175 MiB = 175 x 1,048,576 = 183,500,800 B. With 8 frames at 256 px, stock keeps
    # 8 x 786,432 B = 6 MiB of frames on the device (its peak is ~178 MiB); offloading them
    # (or streaming) is what brings the peak under the budget.
    budget = 175 * MiB
    p = _tune(results, "budget=175MiB", "study_name=fit")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    best = re.search(r"^best: (.*)$", p.stdout, re.M)
    assert best, p.stdout
    knobs = dict(kv.split("=", 1) for kv in best.group(1).split())
    assert knobs.pop("model.image_size") == "256"
    df = sam2tune.load_results(results)
    ok = df[df.status == "ok"]
    assert not ok.empty, df[["status", "error"]]

    def same(r) -> bool:  # the row ran the best configuration (unnamed knobs at defaults)
        for col, default in (
            ("offload_video_to_cpu", "false"),
            ("offload_state_to_cpu", "false"),
            ("strategy", "stock"),
            ("max_cond_frames_in_attn", "-1"),
            ("dtype", "float32"),
            ("predictor", "per_object"),
            ("segment_frames", "0"),
        ):
            v = getattr(r, col)
            v = str(v).lower() if isinstance(v, (bool, np.bool_)) else str(v)
            if v != knobs.get(f"knobs.{col}", default):
                return False
        return r.image_size == 256 and r.num_frames == 8 and r.num_objects == 1

    runs = [r for r in ok.itertuples() if same(r)]
    assert len(runs) == 1, (knobs, df.to_dict("records"))
    # the check: what the run itself measured fits the budget it was given
    assert runs[0].est_device_peak_bytes <= budget, (runs[0].est_device_peak_bytes, budget)
    assert runs[0].device == "cpu" and runs[0].weights_bytes > 0
    # the budget binds: stock, the same run with every frame on the device, measures over it
    assert knobs, "the tuner kept stock although its frames do not fit"
    from sam2tune.config.store import compose_run
    from sam2tune.runner.launcher import run_isolated

    ran = json.loads((results / "runs" / runs[0].run_id / "config.json").read_text())
    v = ran["video"]  # the same video as the confirmation run
    stock = run_isolated(
        compose_run(
            [
                "device=cpu",
                "model.image_size=256",
                f"video.num_frames={v['num_frames']}",
                f"video.num_objects={v['num_objects']}",
                f"video.height={v['height']}",
                f"video.width={v['width']}",
                f"video.seed={v['seed']}",
                "probe.reference=false",
                f"results_dir={tmp_path / 'stock'}",
            ]
        )
    ).row
    assert stock["status"] == "ok" and stock["est_device_peak_bytes"] > budget

    # a budget below the weights alone (SAM 2.1 tiny's parameters, measured by the run above:
    # ~149 MiB) fits nothing: the documented answer, exit 1, and nothing is run
    weights = int(runs[0].weights_bytes)
    assert 100 * MiB < weights
    p = _tune(results, "budget=100MiB", "study_name=none")
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    assert "nothing fits the accelerator budget" in p.stdout, p.stdout
    m = re.search(r"the smallest predicted accelerator peak is ([\d.]+) (MiB|GiB)", p.stdout)
    assert m and float(m.group(1)) * (MiB if m.group(2) == "MiB" else 1024 * MiB) > weights
    assert "budget 100.0 MiB" in p.stdout
    assert "best:" not in p.stdout and "Traceback" not in p.stderr
    assert len(sam2tune.load_results(results)) == len(df)  # no run for an infeasible config

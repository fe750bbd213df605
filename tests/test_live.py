"""Frames from anywhere: sam2tune.propagate on an iterable of RGB arrays (a live source) gives
the JPEG folder's masks on the same pixels, reads each frame once, holds a bounded number, and
ends cleanly (or says why) when the source stops or fails."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sam2tune
from sam2tune.errors import InputError
from sam2tune.video.live import LOOKAHEAD, FrameSourceError

N = 20  # > 16: SAM 2's object-pointer window does not depend on the length


@pytest.fixture(scope="module")
def predictor():
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from sam2.build_sam import build_sam2_video_predictor

    if not GlobalHydra().is_initialized():
        initialize_config_module("sam2", version_base="1.2")
    torch.manual_seed(0)
    return build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu",
        hydra_overrides_extra=["++model.image_size=256"],
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("live")
    rng = np.random.default_rng(1)
    for i in range(N):
        a = (rng.random((72, 96, 3)) * 60).astype(np.uint8)
        a[10 + i : 40 + i, 10 + 2 * i : 40 + 2 * i] = (230, 70, 70)
        a[40:65, 60:90] = (70, 220, 90)
        Image.fromarray(a).save(d / f"{i:05d}.jpg", quality=95)
    return d


PROMPTS = [
    dict(frame_idx=0, obj_id=1, box=[10, 10, 40, 40]),
    dict(frame_idx=6, obj_id=2, points=[[75, 52]], labels=[1]),  # enters later
]


def _decoded(folder: Path, log: list[int] | None = None, stop: int | None = None, fail=None):
    """The folder's frames as RGB arrays, one at a time (as a camera would give them)."""
    for i, p in enumerate(sorted(folder.glob("*.jpg"))):
        if stop is not None and i == stop:
            return
        if fail is not None and i == fail:
            raise OSError("camera unplugged")
        if log is not None:
            log.append(i)
        with Image.open(p) as im:
            yield np.array(im.convert("RGB"))


def _run(it):
    return {f: (list(ids), m.clone()) for f, ids, m in it}


@pytest.mark.slow
def test_a_live_source_gives_the_folders_masks_read_once_and_bounded(predictor, folder):
    ref = _run(sam2tune.propagate(predictor, str(folder), PROMPTS, strategy="stream"))
    assert sorted(ref) == list(range(N))
    pulled: list[int] = []
    ahead = []
    out = {}
    for f, ids, m in sam2tune.propagate(predictor, _decoded(folder, pulled), PROMPTS, prefetch=2):
        ahead.append(len(pulled) - 1 - f)  # frames read beyond the one yielded
        out[f] = (list(ids), m.clone())
    assert sorted(out) == list(range(N))
    assert pulled == list(range(N))  # each frame read exactly once, in order
    assert max(ahead) <= LOOKAHEAD  # the first 16 frames are read at the start (their length)
    assert max(ahead[LOOKAHEAD:]) <= 2 + 1  # then the decode-ahead queue (+ the frame tracked)
    for f in range(N):
        assert out[f][0] == ref[f][0], f  # object 2 joins on frame 6 in both
        assert torch.equal(out[f][1], ref[f][1]), f  # bit-identical logits
    assert out[5][0] == [1] and out[6][0] == [1, 2]


@pytest.mark.slow
def test_a_source_that_stops_or_fails_ends_the_run_with_what_was_produced(predictor, folder):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = _run(sam2tune.propagate(predictor, _decoded(folder, stop=9), PROMPTS, num_frames=N))
    assert sorted(got) == list(range(9))
    assert any("ended after 9 of the num_frames=20" in str(x.message) for x in w)
    with warnings.catch_warnings(record=True) as w:  # unknown length: its end is the video's end
        warnings.simplefilter("always")
        assert sorted(_run(sam2tune.propagate(predictor, _decoded(folder, stop=9), PROMPTS))) == (
            list(range(9))
        )
    assert not [x for x in w if "ended after" in str(x.message)]
    seen = []
    with pytest.raises(FrameSourceError, match=r"frames\[12\]: the frame source raised OSError"):
        for f, _, _ in sam2tune.propagate(predictor, _decoded(folder, fail=12), PROMPTS):
            seen.append(f)
    assert seen[-1] >= 9 and seen == list(range(len(seen)))  # frames before it were yielded


def test_live_input_is_refused_in_one_line_where_it_cannot_work(predictor, folder):
    frames = list(_decoded(folder, stop=3))
    cases = [
        (dict(video_path=iter([])), "frames: the iterable gave no frame"),
        (dict(video_path=iter([np.zeros((4, 4), np.uint8)])), "frames[0]: a H x W x 3 uint8"),
        (dict(video_path=iter(frames), strategy="stock"), "strategy: an iterable of frames"),
        (dict(video_path=iter(frames), segment_frames=4), "strategy: an iterable of frames"),
        (dict(video_path=iter(frames), num_frames=0), "num_frames: an integer >= 1"),
        (dict(video_path=str(folder), num_frames=5), "num_frames: only for an iterable"),
    ]
    for kw, needle in cases:
        with pytest.raises(InputError) as e:
            sam2tune.propagate(predictor, prompts=PROMPTS, **kw)
        assert needle in str(e.value), (kw, str(e.value))
    bad = iter([frames[0], frames[1], np.zeros((10, 10, 3), np.uint8)])
    with pytest.raises(FrameSourceError, match=r"frames\[2\]: every frame 72 x 96 x 3"):
        _run(sam2tune.propagate(predictor, bad, PROMPTS[:1]))


@pytest.mark.slow
def test_a_short_live_source_gets_its_exact_length(predictor, folder, tmp_path):
    """SAM 2 uses a video's length below 16 frames (its object-pointer window): a source that
    ends within the first 16 frames gives the masks of a folder of the same frames."""
    import shutil

    for p in sorted(folder.glob("*.jpg"))[:8]:
        shutil.copy(p, tmp_path / p.name)
    ref = _run(sam2tune.propagate(predictor, str(tmp_path), PROMPTS, strategy="stream"))
    got = _run(sam2tune.propagate(predictor, _decoded(tmp_path), PROMPTS))
    assert sorted(got) == sorted(ref) == list(range(8))
    assert all(torch.equal(got[f][1], ref[f][1]) for f in ref)

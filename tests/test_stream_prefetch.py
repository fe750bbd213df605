"""``strategy=stream``'s frames decoded ahead by background threads (``knobs.stream_prefetch``):
the same tensors as SAM 2's own loader, in any order; at most ``window + prefetch`` frames held;
the loop waits on the decoder only when it is faster than decoding; threads stopped at close."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image, UnidentifiedImageError
from sam2.utils.misc import load_video_frames

from sam2tune.adapter.frames import StreamingFrames

S = 256
N = 12
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    d = tmp_path_factory.mktemp("prefetch")
    rng = np.random.default_rng(0)
    for t in range(N):  # 720p noise: a real decode + resize per frame
        Image.fromarray(rng.integers(0, 255, (720, 1280, 3), np.uint8)).save(d / f"{t:05d}.jpg")
    return str(d)


@pytest.fixture(scope="module")
def reference(video):
    images, h, w = load_video_frames(video, S, offload_video_to_cpu=True, compute_device=CPU)
    return images, h, w


def _decode_threads() -> int:
    return sum(t.name.startswith("sam2tune-decode") for t in threading.enumerate())


@pytest.mark.parametrize("prefetch", [0, 3])
@pytest.mark.parametrize("order", ["forward", "reverse", "jumps"])
def test_frames_equal_sam2s_loader_in_any_order(video, reference, prefetch, order):
    images, h, w = reference
    f = StreamingFrames(video, S, CPU, window=2, prefetch=prefetch)
    assert (f.video_height, f.video_width) == (h, w) and len(f) == N
    idx = {"forward": range(N), "reverse": range(N - 1, -1, -1), "jumps": [0, 7, 8, 2, 3, 11]}
    for t in idx[order]:
        assert torch.equal(f[t], images[t]), t
        # bounded: the served window plus the queue decoded ahead
        assert len(f._cache) <= 2 and len(f._pending) <= prefetch
        assert len(f.images) <= 2 + prefetch
    f.close()


def test_forward_pass_decodes_each_frame_once_and_queues_in_the_direction_of_travel(video):
    f = StreamingFrames(video, S, CPU, window=2, prefetch=3)
    for t in range(N):
        f[t]
        assert sorted(f._pending) == [i for i in (t + 1, t + 2, t + 3) if i < N]
    assert f.decoded == N
    f[N - 2]  # walking back: the queue turns around
    assert sorted(f._pending) == [N - 5, N - 4, N - 3]
    f.close()


def test_prefetch_hides_decoding_behind_a_slower_consumer(video):
    """A consumer slower than the decoder (as SAM 2 on a GPU is not, on this CPU) waits for the
    first frame only; decoding in the loop waits for every frame."""
    waits = {}
    for prefetch in (0, 2):
        f = StreamingFrames(video, S, CPU, window=2, prefetch=prefetch)
        f[0]
        per_frame = f.decode_s
        for t in range(1, N):
            time.sleep(3 * per_frame)  # "tracking" a frame takes three decodes' time
            f[t]
        waits[prefetch] = (f.wait_s, f.decode_s)
        f.close()
    inline_wait, inline_decode = waits[0]
    ahead_wait, ahead_decode = waits[2]
    assert inline_wait >= 0.95 * inline_decode  # decoded inline: the loop waited for all of it
    assert ahead_wait < 0.35 * ahead_decode  # decoded ahead: mostly hidden


def test_close_stops_the_decoding_threads(video):
    before = _decode_threads()
    f = StreamingFrames(video, S, CPU, window=2, prefetch=3)
    f[0]
    assert _decode_threads() > before
    f.close()
    assert _decode_threads() == before
    assert f.images == []


def test_mask_dir_writes_behind_a_bounded_queue_and_reads_back_what_was_given(tmp_path):
    from sam2tune.metrics import MaskDir

    rng = np.random.default_rng(1)
    md = MaskDir(tmp_path / "m", 90, 160)
    given = {}
    for t in range(3 * MaskDir.QUEUE):
        m = rng.random((2, 90, 160)) > 0.5
        given[t] = m.copy()
        md.add(t, [1, 2], m)
        m[:] = False  # the caller reuses its array: what was given is what is written
        assert len(md._pending) <= MaskDir.QUEUE
    for t, m in given.items():
        got = md.get(t)
        assert np.array_equal(got[1], m[0]) and np.array_equal(got[2], m[1])
    md.close()
    assert len(list((tmp_path / "m" / "2").glob("*.png"))) == 3 * MaskDir.QUEUE


def test_mask_dir_reports_a_failed_write(tmp_path):
    from sam2tune.metrics import MaskDir

    (tmp_path / "m").write_text("a file where the mask folder should be")
    md = MaskDir(tmp_path / "m", 8, 8)
    md.add(0, [1], np.ones((1, 8, 8), bool))
    with pytest.raises(OSError):
        md.close()


def test_a_frame_that_fails_to_decode_ahead_fails_when_it_is_asked_for(video, tmp_path):
    import shutil

    d = tmp_path / "v"
    shutil.copytree(video, d)
    (d / "00003.jpg").write_bytes(b"not a jpeg")
    f = StreamingFrames(str(d), S, CPU, window=2, prefetch=3)
    f[0]
    time.sleep(0.5)  # frame 3's decode has failed in the background by now
    assert len(f.images) <= 2 + 3  # counting what is held does not raise
    f[1], f[2]
    with pytest.raises(UnidentifiedImageError):  # as when decoding in the loop
        f[3]
    f.close()

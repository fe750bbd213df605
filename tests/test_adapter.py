"""The SAM 2 adapter in-process: real SAM 2 tiny, random-init, 256 px, CPU."""

import pytest
import torch

from sam2tune.adapter.build import build_predictor
from sam2tune.adapter.session import FrameStep, Session
from sam2tune.config.schema import KnobsConfig, ModelConfig, ScenarioConfig, VideoConfig
from sam2tune.probes import TensorTracker
from sam2tune.scenario import make_prompts
from sam2tune.video.sources import resolve_video

S = 256


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_predictor(
        ModelConfig(image_size=S),
        KnobsConfig(),
        torch.device("cpu"),
        tmp_path_factory.mktemp("cache"),
    )


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return resolve_video(
        VideoConfig(num_frames=5, num_objects=2, height=96, width=128),
        tmp_path_factory.mktemp("v"),
    )


def test_random_init_is_labelled_and_reproducible(built, tmp_path):
    again = build_predictor(
        ModelConfig(image_size=S), KnobsConfig(), torch.device("cpu"), tmp_path
    )
    assert built.weights == again.weights == "random-init"
    a, b = built.predictor.state_dict(), again.predictor.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert built.weights_bytes == sum(v.numel() * v.element_size() for v in a.values())
    assert 150e6 < built.weights_bytes < 160e6  # tiny: 39 M params in fp32
    assert built.predictor.image_size == S and "++model.image_size=256" in built.overrides


@pytest.mark.parametrize(
    "offload_video,offload_state", [(False, False), (True, False), (True, True)]
)
def test_census_counts_frames_exactly_and_splits_by_knob(
    built, video, offload_video, offload_state
):
    knobs = KnobsConfig(offload_video_to_cpu=offload_video, offload_state_to_cpu=offload_state)
    sess = Session(built.predictor, video.sam2_path, knobs)
    sess.init()
    c0 = sess.census()
    assert c0.frames_bytes == video.num_frames * 3 * S * S * 4
    assert c0.frames_device_bytes == (0 if offload_video else c0.frames_bytes)
    states = []
    for ev in sess.track(make_prompts(video, ScenarioConfig(), video.num_frames)):
        if isinstance(ev, FrameStep):
            states.append(sess.census())
    assert [s.state_bytes for s in states] == sorted(s.state_bytes for s in states)
    assert states[-1].state_bytes > states[0].state_bytes  # per-object outputs accumulate
    last = states[-1]
    if offload_state:
        # maskmem features and masks live on the host; object pointers stay on the device
        assert 0 < last.state_device_bytes < last.state_bytes - last.maskmem_bytes
    else:
        assert last.state_device_bytes == last.state_bytes
    assert last.maskmem_bytes == last.maskmem_entries * 64 * (S // 16) ** 2 * 2  # bf16


@pytest.mark.slow
def test_tensor_tracker_sees_allocations_and_frees():
    tr = TensorTracker()
    keep = torch.zeros(1)
    with tr:
        tr.begin_step()
        a = torch.ones(256, 1024)  # 1 MiB
        b = a * 2  # another 1 MiB
        del a, b
        tr.begin_step()
        c = keep + 1  # a new 4-byte storage
        v = c.view(1)  # a view: no new storage
    tr.end()
    assert tr.step_peaks[0] == 2 * 2**20
    assert tr.live == c.untyped_storage().nbytes() == 4
    assert tr.step_peaks[1] == 4 and v.data_ptr() == c.data_ptr()

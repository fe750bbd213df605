import numpy as np
import pytest

from sam2tune.config.schema import ScenarioConfig, VideoConfig
from sam2tune.metrics import MaskSet, agreement, iou, iou_vs_labels
from sam2tune.scenario import make_prompts
from sam2tune.video.sources import resolve_video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return resolve_video(VideoConfig(num_frames=16, num_objects=3), tmp_path_factory.mktemp("c"))


def test_objects_are_prompted_where_they_first_appear(video):
    prompts = make_prompts(video, ScenarioConfig(), video.num_frames)
    first = {}
    for t in range(video.num_frames):
        lab = video.labels(t)
        for i in (1, 2, 3):
            if i not in first and (lab == i).sum() >= 64:
                first[i] = t
    assert {p.obj_id: p.frame for p in prompts} == first
    assert first[3] > 0  # the entering object is prompted mid-video


def test_reprompting_every_k_frames_and_prompt_kinds(video):
    prompts = make_prompts(video, ScenarioConfig(prompt="points", reannotate_every=5), 16)
    obj1 = [p.frame for p in prompts if p.obj_id == 1]
    assert obj1 == [0, 5, 10, 15]
    for p in prompts:
        x, y = p.points[0]
        assert video.labels(p.frame)[int(y), int(x)] == p.obj_id  # the click is on the object
    box = make_prompts(video, ScenarioConfig(prompt="box"), 16)[0]
    x0, y0, x1, y1 = box.box
    lab = video.labels(box.frame) == box.obj_id
    ys, xs = np.nonzero(lab)
    assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max(), ys.max())
    m = make_prompts(video, ScenarioConfig(prompt="mask"), 16)[0]
    assert np.array_equal(m.mask, lab)


def test_iou_on_hand_made_masks():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:4] = True  # 16 px
    b[2:6, 2:6] = True  # 16 px, overlap 4
    assert iou(a, b) == pytest.approx(4 / 28)
    assert iou(a, a) == 1.0
    assert iou(np.zeros_like(a), np.zeros_like(a)) == 1.0  # both empty
    assert iou(a, np.zeros_like(a)) == 0.0
    ms = MaskSet(10, 10)
    ms.add(0, [1], a[None])
    ms.add(1, [1], a[None])
    labels = {0: a.astype(np.uint8), 1: b.astype(np.uint8), 2: None}
    per = iou_vs_labels(ms, labels.get, 3)  # frame 2 has no annotation: not scored
    assert per[1] == pytest.approx((1 + 4 / 28) / 2)


def test_maskset_roundtrip_and_agreement(tmp_path):
    rng = np.random.default_rng(0)
    ms = MaskSet(8, 9)
    m = rng.random((2, 8, 9)) > 0.5
    ms.add(0, [1, 2], m)
    ms.add(1, [1, 2, 5], rng.random((3, 8, 9)) > 0.5)
    ms.save(tmp_path / "m.npz")
    back = MaskSet.load(tmp_path / "m.npz")
    assert back.frames == [0, 1] and back.obj_ids == [1, 2, 5]
    assert np.array_equal(back.get(0)[2], m[1])
    assert agreement(ms, back, [0, 1]) == {1: 1.0, 2: 1.0, 5: 1.0}
    other = MaskSet(8, 9)
    other.add(0, [1, 2], ~m)
    other.add(1, [1, 2, 5], np.zeros((3, 8, 9), bool))
    assert agreement(ms, other, [0, 1])[1] < 0.5

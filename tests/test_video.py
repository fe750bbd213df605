import numpy as np
import pytest
from PIL import Image

from sam2tune.config.schema import VideoConfig
from sam2tune.errors import InputError
from sam2tune.video.sources import _palette, resolve_video
from sam2tune.video.synthetic import SyntheticSpec, render_video


def _frames(spec):
    return list(render_video(spec))


def test_synthetic_is_deterministic_from_its_seed():
    a = _frames(SyntheticSpec(5, 3, 90, 120, 7))
    b = _frames(SyntheticSpec(5, 3, 90, 120, 7))
    c = _frames(SyntheticSpec(5, 3, 90, 120, 8))
    assert all(
        np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
        for x, y in zip(a, b, strict=True)
    )
    assert not np.array_equal(a[0][0], c[0][0])


def test_synthetic_last_object_enters_after_the_first_frame_and_objects_occlude():
    fr = _frames(SyntheticSpec(24, 3, 270, 480, 0))
    areas = np.array([[int((lab == k).sum()) for k in (1, 2, 3)] for _, lab in fr])
    assert areas[0, 2] == 0 and areas[:, 2].max() > 1000  # enters later
    first = int(np.argmax(areas[:, 2] > 0))
    assert first >= 1
    # occlusion: an object's visible area drops well below its unoccluded area at some frame
    assert (areas[:, 0].min() < 0.8 * areas[:, 0].max()) or (
        areas[:, 1].min() < 0.8 * areas[:, 1].max()
    )
    assert fr[0][0].shape == (270, 480, 3) and fr[0][0].dtype == np.uint8


def test_synthetic_any_frame_count_and_size(tmp_path):
    v = resolve_video(VideoConfig(num_frames=3, num_objects=1, height=64, width=48), tmp_path)
    assert (v.num_frames, v.height, v.width) == (3, 64, 48)
    assert v.object_ids() == [1]
    assert len(list((tmp_path / "videos").glob("synthetic-*/JPEGImages/*.jpg"))) == 3


def _davis(tmp_path, n=4, h=40, w=60, ids=(3, 7), missing=(2,), ann_size=None):
    jpg, ann = tmp_path / "JPEGImages", tmp_path / "Annotations"
    jpg.mkdir()
    ann.mkdir()
    for t in range(n):
        Image.fromarray(np.full((h, w, 3), 40 * t, np.uint8)).save(jpg / f"{t:05d}.jpg")
        if t in missing:
            continue
        ah, aw = ann_size or (h, w)
        lab = np.zeros((ah, aw), np.uint8)
        lab[5:15, 5:20] = ids[0]
        lab[20:30, 30:50] = ids[1]
        im = Image.fromarray(lab, mode="P")
        im.putpalette(_palette())
        im.save(ann / f"{t:05d}.png")
    return jpg, ann


def test_davis_folder_with_non_contiguous_ids_and_missing_masks(tmp_path):
    jpg, ann = _davis(tmp_path)
    v = resolve_video(
        VideoConfig(kind="jpeg_dir", path=str(jpg), annotations=str(ann), num_frames=None),
        tmp_path / "c",
    )
    assert v.num_frames == 4 and (v.height, v.width) == (40, 60)
    assert v.object_ids() == [3, 7]
    assert v.labels(2) is None and v.labels(1)[10, 10] == 3


def test_jpeg_dir_subset_of_frames(tmp_path):
    jpg, ann = _davis(tmp_path, n=6)
    v = resolve_video(VideoConfig(kind="jpeg_dir", path=str(jpg), num_frames=3), tmp_path / "c")
    assert v.num_frames == 3 and len(list(__import__("pathlib").Path(v.sam2_path).iterdir())) == 3


@pytest.mark.parametrize(
    "case",
    ["missing", "empty", "corrupt", "truncated_last", "mask_size", "mp4_missing", "mp4_corrupt"],
)
def test_bad_videos_are_refused_with_one_line(tmp_path, case):
    cfg = VideoConfig(kind="jpeg_dir", path=str(tmp_path / "nope"), num_frames=None)
    if case == "empty":
        (tmp_path / "empty").mkdir()
        cfg.path = str(tmp_path / "empty")
    elif case == "corrupt":
        jpg, _ = _davis(tmp_path)
        (jpg / "00001.jpg").write_bytes(b"not a jpeg")
        cfg.path = str(jpg)
    elif case == "truncated_last":
        jpg, _ = _davis(tmp_path)
        rng = np.random.default_rng(0)
        Image.fromarray((rng.random((40, 60, 3)) * 255).astype(np.uint8)).save(jpg / "00003.jpg")
        b = (jpg / "00003.jpg").read_bytes()
        (jpg / "00003.jpg").write_bytes(b[: len(b) // 2])
        cfg.path = str(jpg)
    elif case == "mask_size":
        jpg, ann = _davis(tmp_path, ann_size=(30, 30))
        cfg.path, cfg.annotations = str(jpg), str(ann)
    elif case == "mp4_missing":
        cfg = VideoConfig(kind="mp4", path=str(tmp_path / "x.mp4"), num_frames=None)
    elif case == "mp4_corrupt":
        (tmp_path / "x.mp4").write_bytes(b"\x00" * 100)
        cfg = VideoConfig(kind="mp4", path=str(tmp_path / "x.mp4"), num_frames=None)
    with pytest.raises(InputError) as e:
        resolve_video(cfg, tmp_path / "c")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(("video.path", "video.annotations"))

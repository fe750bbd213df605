"""The public API: sam2tune.propagate gives SAM 2's own mask logits for every strategy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sam2tune


@pytest.fixture(scope="module")
def predictor():
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from sam2.build_sam import build_sam2_video_predictor

    if not GlobalHydra().is_initialized():  # another test's compose cleared what sam2 set up
        initialize_config_module("sam2", version_base="1.2")

    torch.manual_seed(0)
    return build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu",
        hydra_overrides_extra=["++model.image_size=256"],
    )


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    for i in range(5):
        a = (rng.random((96, 128, 3)) * 60).astype(np.uint8)
        a[20 + 2 * i : 50 + 2 * i, 20 + 3 * i : 60 + 3 * i] = (230, 70, 70)
        a[55:85, 90 - 3 * i : 120 - 3 * i] = (70, 220, 90)
        Image.fromarray(a).save(d / f"{i:05d}.jpg", quality=95)
    return str(d)


PROMPTS = [
    dict(frame_idx=0, obj_id=1, box=[20, 20, 60, 50]),
    dict(frame_idx=0, obj_id=2, points=[[105, 70]], labels=[1]),
]


def _collect(it):
    return {f: (list(ids), m.clone()) for f, ids, m in it}


@pytest.mark.slow
def test_every_strategy_yields_sam2s_own_logits(predictor, frames):
    state = predictor.init_state(frames)
    predictor.add_new_points_or_box(state, 0, 1, box=np.array([20, 20, 60, 50], np.float32))
    predictor.add_new_points_or_box(
        state, 0, 2, points=np.array([[105, 70]], np.float32), labels=np.array([1], np.int32)
    )
    plain = _collect(predictor.propagate_in_video(state))
    assert sorted(plain) == list(range(5))
    for strategy, prefetch in (("stock", 4), ("release", 4), ("stream", 4), ("stream", 0)):
        got = _collect(
            sam2tune.propagate(predictor, frames, PROMPTS, strategy=strategy, prefetch=prefetch)
        )
        assert sorted(got) == sorted(plain), strategy
        for f, (ids, logits) in plain.items():
            assert got[f][0] == ids, (strategy, prefetch, f)
            assert torch.equal(got[f][1], logits), (strategy, prefetch, f)


@pytest.mark.parametrize(
    "prompts, needle",
    [
        ([dict(frame_idx=0, obj_id=1)], "points + labels, a box, or a mask"),
        ([dict(frame_idx=0, obj_id=1, points=[[1, 2]])], "points and labels go together"),
        ([dict(frame=0, obj_id=1, box=[0, 0, 1, 1])], "unknown key(s) frame"),
        ([dict(frame_idx=0, obj_id=1, box=[0, 0, 1])], "prompts[0].box: 4 numbers, got shape (3,)"),
        ([], "at least one prompt"),
        # against the video (5 frames of 128 x 96), each naming the prompt's index and field
        ([PROMPTS[0], dict(frame_idx=-1, obj_id=3, box=[1, 1, 9, 9])],
         "prompts[1].frame_idx: must be in 0..4 (the video has 5 frames), got -1"),
        ([dict(frame_idx=100, obj_id=1, box=[1, 1, 9, 9])], "prompts[0].frame_idx: must be in 0..4"),
        ([dict(frame_idx=None, obj_id=1, box=[1, 1, 9, 9])], "prompts[0]: frame_idx is required"),
        ([dict(frame_idx=1.7, obj_id=1, box=[1, 1, 9, 9])], "prompts[0].frame_idx: an integer, got 1.7"),
        ([dict(frame_idx=0, obj_id="abc", box=[1, 1, 9, 9])], "prompts[0].obj_id: an integer"),
        ([dict(frame_idx=0, obj_id=1, box="1,1,9,9")], "prompts[0].box: numbers, got a string"),
        ([dict(frame_idx=0, obj_id=1, box=[9, 1, 1, 9])], "prompts[0].box: [x0, y0, x1, y1] with x0 < x1"),
        ([dict(frame_idx=0, obj_id=1, box=[200, 1, 300, 9])], "prompts[0].box: [200.0, 1.0, 300.0, 9.0] lies outside the 128 x 96 frame"),
        ([dict(frame_idx=0, obj_id=1, box=[60, 8, 500, 40])], "prompts[0].box: [60.0, 8.0, 500.0, 40.0] reaches beyond the 128 x 96 frame"),
        ([dict(frame_idx=0, obj_id=1, box=[-20, -20, 50, 50])], "reaches beyond the 128 x 96 frame"),
        ([dict(frame_idx=0, obj_id=1, points=[[1, 2, 3]], labels=[1])], "prompts[0].points: N x 2 numbers, got shape (1, 3)"),
        ([dict(frame_idx=0, obj_id=1, points=[], labels=[])], "prompts[0].points: N x 2 numbers"),
        ([dict(frame_idx=0, obj_id=1, points=[[1, 2]], labels=[7])], "prompts[0].labels: 1 (positive) or 0"),
        ([dict(frame_idx=0, obj_id=1, points=[[500, 2]], labels=[1])], "prompts[0].points: (500.0, 2.0) lies outside"),
        ([dict(frame_idx=0, obj_id=1, mask=np.ones((1, 96, 128), bool))], "prompts[0].mask: an H x W = 96 x 128 array"),
        ([dict(frame_idx=0, obj_id=1, mask=np.ones((10, 10), bool))], "got shape (10, 10)"),
        (dict(frame_idx=0, obj_id=1, box=[1, 1, 9, 9]), "prompts: a list of dicts"),
    ],
)
def test_malformed_prompts_are_named(predictor, frames, prompts, needle):
    with pytest.raises(ValueError) as e:  # at the call, before any frame is loaded
        sam2tune.propagate(predictor, frames, prompts)
    assert needle in str(e.value)


def test_unknown_strategy_is_refused(predictor, frames):
    with pytest.raises(ValueError, match="strategy: one of stock, release, stream"):
        sam2tune.propagate(predictor, frames, PROMPTS, strategy="lazy")
    with pytest.raises(ValueError, match="prefetch: an integer 0..64, got -1"):
        sam2tune.propagate(predictor, frames, PROMPTS, strategy="stream", prefetch=-1)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(predictor="batched"), "predictor: one of per_object, legacy_batched, got 'batched'"),
        (dict(impl="tensorflow"), "impl: one of sam2, transformers, got 'tensorflow'"),
        (dict(dtype="float16"), "dtype: one of float32, bfloat16, got 'float16'"),
        (dict(dtype="bfloat16"), "dtype: Meta's sam2 is built in float32"),
        (dict(device="gpu0"), "device: 'gpu0' is not a torch device"),
        *([] if torch.cuda.is_available() else
          [(dict(device="cuda"), "device: 'cuda': this machine has no CUDA device")]),
        (dict(model="sam3_huge"), "model: unknown model 'sam3_huge'"),
        (dict(max_cond_frames_in_attn=1), "knobs.max_cond_frames_in_attn: must be -1 (all) or >= 2"),
        (dict(impl="transformers", predictor="legacy_batched"), "predictor: transformers'"),
    ],
)
def test_build_predictor_names_the_bad_argument(kwargs, needle):
    from sam2tune.errors import InputError

    args = dict(model="sam2.1_tiny", checkpoint=None, device="cpu") | kwargs
    with pytest.raises(InputError) as e:
        sam2tune.build_predictor(args.pop("model"), args.pop("checkpoint"), args.pop("device"),
                                 **args)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_propagate_refuses_what_transformers_cannot_do_before_any_frame(frames):
    from sam2tune.adapter.hf import HFPredictor
    from sam2tune.errors import InputError

    hf = HFPredictor(None, None, torch.device("cpu"), 256, torch.float32)  # never run
    p = [dict(frame_idx=0, obj_id=1, box=[1, 2, 30, 40])]
    with pytest.raises(InputError, match="strategy: transformers' session has no"):
        sam2tune.propagate(hf, str(frames), p, strategy="stream")
    with pytest.raises(InputError, match="dtype: transformers' model was built in float32"):
        sam2tune.propagate(hf, str(frames), p, dtype="bfloat16")


def test_bad_predictor_video_and_numbers_are_named(predictor, frames, tmp_path):
    from sam2tune.errors import InputError

    for args, kw, needle in [
        ((None, frames, PROMPTS), {}, "predictor: a SAM 2 video predictor"),
        ((predictor, str(tmp_path / "nope"), PROMPTS), {}, "video_path: no such file or folder"),
        ((predictor, frames, PROMPTS), dict(prefetch="x"), "prefetch: an integer 0..64, got 'x'"),
        ((predictor, frames, PROMPTS), dict(prefetch=10**7), "prefetch: an integer 0..64"),
        ((predictor, frames, PROMPTS), dict(segment_frames=-2), "segment_frames: an integer >= 0"),
    ]:
        with pytest.raises(InputError) as e:
            sam2tune.propagate(*args, **kw)
        assert needle in str(e.value), (needle, str(e.value))

"""knobs.object_batch: objects tracked in batches through SAM 2's own calls give the per-object
predictor's masks (logits within float32 rounding of the batched kernels, so a mask pixel can
differ only where the logit is within that rounding of 0; none does on these videos) for
one object, several, objects entering later, re-prompting, max_cond_frames_in_attn, with the
bounded strategies; batches hold only objects whose memory reads are identical."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

import sam2tune
from sam2tune.adapter.batched import batches
from sam2tune.errors import InputError

N = 14
LOGIT_TOL = 1e-5  # measured here: at most 3.3e-7 (float32 rounding of the batched kernels)


@pytest.fixture(scope="module")
def predictors():
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from sam2.build_sam import build_sam2_video_predictor

    if not GlobalHydra().is_initialized():
        initialize_config_module("sam2", version_base="1.2")
    torch.manual_seed(0)
    p = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu",
        hydra_overrides_extra=["++model.image_size=256"],
    )
    capped = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu",
        hydra_overrides_extra=["++model.image_size=256", "++model.max_cond_frames_in_attn=2"],
    )
    capped.load_state_dict(p.state_dict())
    return p, capped


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    d = tmp_path_factory.mktemp("objects")
    rng = np.random.default_rng(2)
    for i in range(N):
        a = (rng.random((72, 96, 3)) * 60).astype(np.uint8)
        a[8 + i : 30 + i, 8:30] = (230, 70, 70)
        a[40:64, 60:88] = (70, 220, 90)
        a[5:25, 60 - i : 85 - i] = (60, 90, 230)
        Image.fromarray(a).save(d / f"{i:05d}.jpg", quality=95)
    return str(d)


def pt(f, o, x, y):
    return dict(frame_idx=f, obj_id=o, points=[[x, y]], labels=[1])


CASES = {
    "one object": [pt(0, 1, 18, 18)],
    "four objects": [pt(0, 1, 18, 18), pt(0, 2, 74, 52), pt(0, 3, 70, 14), pt(0, 4, 40, 60)],
    "late and re-prompted": [
        pt(0, 1, 18, 18), pt(0, 2, 74, 52), pt(0, 3, 70, 14), pt(5, 4, 40, 60),  # 4 enters late
        pt(8, 1, 20, 26), pt(8, 2, 74, 50),  # 1 and 2 re-prompted alike: still one group
        pt(3, 5, 30, 40), pt(9, 3, 66, 14),
    ],
}


def _run(pred, video, prompts, **kw):
    return {f: (list(ids), m.clone()) for f, ids, m in sam2tune.propagate(pred, video, prompts,
                                                                           **kw)}


@pytest.mark.slow
@pytest.mark.parametrize(
    "case,strategy",
    [(c, "stock") for c in CASES] + [("late and re-prompted", s) for s in ("release", "stream")]
    + [("four objects", "stream")],
)
def test_object_batches_give_the_per_object_masks(predictors, video, case, strategy):
    worst, flips = 0.0, 0
    for pred in predictors if case == "late and re-prompted" else predictors[:1]:
        ref = _run(pred, video, CASES[case], strategy=strategy)
        for k in (2, 0):
            got = _run(pred, video, CASES[case], strategy=strategy, object_batch=k)
            assert sorted(got) == sorted(ref) == list(range(N))
            for f in ref:
                assert got[f][0] == ref[f][0], (k, f)
                flip = (got[f][1] > 0) != (ref[f][1] > 0)  # only at the rounding of 0
                assert (ref[f][1][flip].abs() <= LOGIT_TOL).all(), (k, f)
                flips += int(flip.sum())
                worst = max(worst, (got[f][1] - ref[f][1]).abs().max().item())
    assert worst <= LOGIT_TOL, worst
    assert flips == 0  # on these videos not one pixel sits within the rounding of 0


def test_batches_group_only_identical_reads():
    sig_a, sig_b = ((0,), (True,) * 3), ((0, 8), (True,) * 3)
    todo = [(0, sig_a), (1, sig_b), (2, sig_a), (3, sig_a), (4, sig_b)]
    assert batches(todo, 0) == [[0, 2, 3], [1, 4]]
    assert batches(todo, 2) == [[0, 2], [3], [1, 4]]
    assert batches(todo, 1) == [[0], [2], [3], [1], [4]]


def test_object_batch_is_refused_where_it_cannot_apply(predictors, video):
    for kw, needle in (
        (dict(object_batch=-1), "knobs.object_batch: must be 0 (all) or 1..256"),
        (dict(object_batch="4"), "object_batch: an integer"),
    ):
        with pytest.raises(InputError, match=re.escape(needle)):
            sam2tune.propagate(predictors[0], video, CASES["one object"], **kw)

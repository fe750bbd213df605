"""DAVIS J and F on hand-made masks with answers worked out by hand or by brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sam2tune.metrics import MaskSet, boundary_f, jf_agreement, jf_vs_labels, seg_boundary


def test_boundary_of_a_2x2_square_by_hand():
    seg = np.zeros((5, 5), bool)
    seg[1:3, 1:3] = True
    # DAVIS's rule, pixel by pixel: marked when it differs from its right, lower or lower-right
    # neighbour (last row: right only; last column: lower only)
    expected = {(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)}
    got = {tuple(int(v) for v in p) for p in np.argwhere(seg_boundary(seg))}
    assert got == expected


def _brute_f(a: np.ndarray, b: np.ndarray, bound_th: float = 0.008) -> float:
    """F by explicit distances between boundary pixels (no dilation)."""
    r = math.ceil(bound_th * math.hypot(*a.shape))
    pa, pb = np.argwhere(seg_boundary(a)), np.argwhere(seg_boundary(b))
    if len(pa) == 0 and len(pb) == 0:
        return 1.0
    if len(pa) == 0 or len(pb) == 0:
        return 0.0
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    precision = float((d.min(1) <= r).mean())
    recall = float((d.min(0) <= r).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("shift", [0, 1, 2, 3, 6, 12])
def test_boundary_f_matches_a_brute_force_distance_count(shift):
    a = np.zeros((120, 160), bool)  # diagonal 200 px: tolerance ceil(1.6) = 2 px
    a[30:80, 40:100] = True
    b = np.zeros_like(a)
    b[30 + shift : 80 + shift, 40:100] = True
    f = boundary_f(a, b)
    assert f == pytest.approx(_brute_f(a, b), abs=1e-12)
    if shift <= 2:
        assert f == 1.0  # every boundary pixel within the tolerance
    else:
        assert f < 1.0


def test_boundary_f_edge_cases():
    z = np.zeros((10, 10), bool)
    one = z.copy()
    one[2:5, 2:5] = True
    assert boundary_f(z, z) == 1.0
    assert boundary_f(one, z) == 0.0 and boundary_f(z, one) == 0.0
    assert boundary_f(one, one) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        boundary_f(one, np.zeros((9, 10), bool))


def test_j_and_f_per_object_and_per_frame_by_hand():
    h, w = 40, 40
    gt = [np.zeros((h, w), np.int32) for _ in range(2)]
    gt[0][0:10, 0:10] = 1  # object 1: 100 px
    gt[1][0:10, 0:10] = 1
    gt[0][20:30, 20:30] = 2  # object 2: present on frame 0 only
    pred = MaskSet(h, w)
    m1 = np.zeros((h, w), bool)
    m1[0:10, 0:5] = True  # half of object 1: J = 50 / 100
    pred.add(0, [1, 2], np.stack([m1, gt[0] == 2]))  # object 2 exact
    pred.add(1, [1, 2], np.stack([gt[1] == 1, np.zeros((h, w), bool)]))  # 1 exact, 2 absent
    jf = jf_vs_labels(pred, lambda t: gt[t], 2)
    assert jf.j[1] == pytest.approx((0.5 + 1.0) / 2)
    assert jf.j[2] == pytest.approx((1.0 + 1.0) / 2)  # frame 1: both empty scores 1 (DAVIS)
    f1_frame0 = _brute_f(m1, gt[0] == 1)
    assert jf.f[1] == pytest.approx((f1_frame0 + 1.0) / 2)
    assert jf.f[2] == 1.0
    assert jf.per_frame[0] == pytest.approx(((0.5 + f1_frame0) / 2 + 1.0) / 2)
    assert jf.per_frame[1] == 1.0
    j, f, jfm = jf.means()
    assert jfm == pytest.approx((j + f) / 2)


def test_agreement_of_identical_runs_is_one_and_of_different_runs_is_not():
    h, w = 30, 30
    a, b = MaskSet(h, w), MaskSet(h, w)
    m = np.zeros((1, h, w), bool)
    m[0, 5:15, 5:15] = True
    a.add(0, [1], m)
    b.add(0, [1], m)
    shifted = np.roll(m, 8, axis=2)
    a.add(1, [1], m)
    b.add(1, [1], shifted)
    jf = jf_agreement(a, b, [0, 1])
    assert jf.per_frame[0] == 1.0
    j1 = 20 / 180  # 10x10 squares 8 px apart: overlap 2 x 10, union 200 - 20
    assert jf.j[1] == pytest.approx((1.0 + j1) / 2)
    assert jf.per_frame[1] < 1.0


@pytest.mark.slow
def test_a_run_records_j_f_and_agreement(small):
    from sam2tune.runner.launcher import run_isolated

    out = run_isolated(small("knobs.offload_video_to_cpu=true", "video.num_frames=4"))
    r = out.row
    assert r["status"] == "ok", r["error"]
    for c in ("j_mean", "f_mean", "jf_mean"):
        assert 0.0 <= r[c] <= 1.0
    assert r["jf_mean"] == pytest.approx((r["j_mean"] + r["f_mean"]) / 2)
    assert r["j_ref_mean"] == r["f_ref_mean"] == r["jf_ref_mean"] == 1.0  # lossless knob
    import json

    rep = json.loads(out.report_path.read_text())
    per_frame = rep["quality_per_frame"]["jf_ref"]
    assert per_frame and set(per_frame.values()) == {1.0}

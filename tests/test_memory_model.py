"""The memory model's structural terms against SAM 2 itself, its trust region and "how many
frames fit". Real SAM 2 tiny, random-init, CPU, 128 px (the structure does not depend on it)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import MODEL_COEFFS

from sam2tune.adapter.build import build_predictor
from sam2tune.config.schema import KnobsConfig, ModelConfig, ScenarioConfig, VideoConfig
from sam2tune.memory_model.calibrate import _synthetic_prompts, candidate_of
from sam2tune.memory_model.memory import (
    Candidate,
    MemoryModel,
    Workload,
    max_frames_within_budget,
    memory_read,
    predict,
    trust_region,
)
from sam2tune.runner.measure import propagate
from sam2tune.scenario import make_prompts
from sam2tune.video.sources import resolve_video

S = 128
CPU = torch.device("cpu")
N = 20

COEFFS = MODEL_COEFFS


def _model(region=None):
    cal = {"cpu": {"runs": 1, "region": region or {}}}
    return MemoryModel({"cpu": dict(COEFFS), "cuda": dict(COEFFS)}, cal)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("memmodel")


def _session_tokens(cache, objects, every, **knobs):
    """Run SAM 2 and record the memory tokens (and batch) of every memory-attention call."""
    k = KnobsConfig(**knobs)
    pred = build_predictor(ModelConfig(image_size=S), k, CPU, cache).predictor
    calls: list[tuple[int, int]] = []

    def hook(_mod, _args, kwargs):
        mem = kwargs["memory"]
        calls.append((int(mem.shape[0]), int(mem.shape[1])))  # (tokens, batch), seq-first

    h = pred.memory_attention.register_forward_pre_hook(hook, with_kwargs=True)
    video = resolve_video(
        VideoConfig(num_frames=N, num_objects=objects, height=96, width=128), cache
    )
    prompts = make_prompts(video, ScenarioConfig(reannotate_every=every), N)
    try:
        propagate(pred, video, prompts, k, CPU, probes=False)
    finally:
        h.remove()
    per_obj: dict[int, list[int]] = {}
    for p in prompts:
        per_obj.setdefault(p.obj_id, []).append(p.frame)
    w = Workload(
        "sam2.1_tiny",
        S,
        N,
        objects,
        len({p.frame for p in prompts}),
        cond_frames=[sorted(v) for _, v in sorted(per_obj.items())],
    )
    return calls, w, candidate_of(dataclasses.asdict(k))


@pytest.mark.slow
@pytest.mark.parametrize(
    "objects,every,knobs",
    [
        (1, 0, {}),
        (1, 2, {}),  # re-prompting: conditioning frames in attention
        (1, 2, {"max_cond_frames_in_attn": 2}),  # SAM 2's closest-frame selection
        # an object entering late, with its own conditioning frames
        pytest.param(2, 3, {}, marks=pytest.mark.slow),
        # one batch, the union of prompted frames
        pytest.param(3, 4, {"predictor": "legacy_batched"}, marks=pytest.mark.slow),
        pytest.param(2, 3, {"knobs_segment": 8}, marks=pytest.mark.slow),
    ],
)
def test_memory_tokens_match_what_sam2_attends(cache, objects, every, knobs):
    seg = knobs.pop("knobs_segment", 0)
    if seg:
        knobs["segment_frames"] = seg
    calls, w, c = _session_tokens(cache, objects, every, **knobs)
    r = memory_read(w, c)
    assert calls, "SAM 2 ran no memory attention"
    assert r["tokens"] == max(t for t, _ in calls)  # the largest read, exactly
    assert r["batch"] == max(b for _, b in calls)
    if knobs.get("max_cond_frames_in_attn"):
        uncapped = memory_read(w, dataclasses.replace(c, max_cond_frames_in_attn=-1))
        assert uncapped["tokens"] > r["tokens"]


@pytest.mark.slow
def test_every_frame_prompted_runs_no_memory_attention(cache):
    calls, w, c = _session_tokens(cache, 1, 1)
    assert calls == [] and memory_read(w, c)["frames"] == 0


def test_activation_structure_cond_frames_model_size_dtype():
    m = _model()
    base = Workload("sam2.1_tiny", 512, 40, 1, 1)
    every2 = Workload("sam2.1_tiny", 512, 40, 1, prompt_every=2)
    assert every2.num_cond_frames == 20
    p1, p20 = predict(base, Candidate(), m, "cpu", 0), predict(every2, Candidate(), m, "cpu", 0)
    capped = predict(every2, Candidate(max_cond_frames_in_attn=2), m, "cpu", 0)
    # 20 conditioning frames: memory attention dominates; the cap brings it back down
    assert p20.memory_read["frames"] == 20 + 3  # + the 3 non-conditioning of the last 6
    assert p20.terms["activations"] > 1.5 * p1.terms["activations"]
    assert capped.terms["activations"] < p20.terms["activations"]
    # the image encoder scales with the Hiera trunk's width (large 144 vs tiny 96 channels)
    large = predict(dataclasses.replace(base, model="sam2.1_large"), Candidate(), m, "cpu", 0)
    ratio = large.activation_phases["image_encoder"] / p1.activation_phases["image_encoder"]
    assert ratio == pytest.approx(144 / 96, rel=1e-6)


def test_cuda_host_holds_the_whole_frame_cache_while_loading():
    m = _model()
    w = Workload("sam2.1_tiny", 1024, 3600, 1, 1)
    p = predict(w, Candidate(), m, "cuda", 10**9)
    frames = 3600 * 3 * 1024**2 * 4
    # SAM 2's loader fills a host tensor, then moves it: the host needs it once, offload or not
    assert p.host_terms["loading_transient"] >= frames
    off = predict(w, Candidate(offload_video_to_cpu=True), m, "cuda", 10**9)
    assert off.host_terms["frames"] == frames
    stream = predict(w, Candidate(strategy="stream"), m, "cuda", 10**9)
    assert stream.host_peak_bytes < 2 * 10**9


def test_trust_region_says_how_far_outside():
    region = {
        "image_size": {"min": 256, "max": 512},
        "num_frames": {"min": 4, "max": 48},
        "num_objects": {"min": 1, "max": 8},
        "memory_frames": {"min": 0, "max": 30},
        "model": ["sam2.1_tiny"],
        "predictor": ["legacy_batched", "per_object"],
        "dtype": ["bfloat16", "float32"],
        "strategy": ["release", "stock", "stream"],
        "offload_video_to_cpu": [False, True],
        "offload_state_to_cpu": [False, True],
    }
    inside = trust_region(Workload("sam2.1_tiny", 384, 24, 2, 1), Candidate(), {"region": region})
    assert inside["inside"] and inside["statement"].startswith("inside")
    out = trust_region(Workload("sam2.1_large", 1024, 24, 2, 1), Candidate(), {"region": region})
    assert not out["inside"]
    assert "image_size 1024: 2.0x the largest calibrated (512)" in out["statement"]
    assert out["axes"]["image_size"]["factor"] == 2.0
    assert out["axes"]["model"]["status"] == "unseen"
    p = predict(Workload("sam2.1_tiny", 1024, 24, 2, 1), Candidate(), _model(region), "cpu", 0)
    assert "2.0x the largest calibrated" in p.trust["statement"]


def test_trust_region_checks_size_and_objects_together_per_model():
    """Each axis inside on its own is not enough: tiny ran at 1024 px and large ran, but never
    large at 1024 px, nor tiny at 1024 px with 3 objects."""
    region = {
        "image_size": {"min": 256, "max": 1024},
        "num_objects": {"min": 1, "max": 3},
        "model": ["sam2.1_large", "sam2.1_tiny"],
        "joint": [["sam2.1_large", 256, 1], ["sam2.1_large", 384, 1], ["sam2.1_tiny", 256, 3],
                  ["sam2.1_tiny", 512, 3], ["sam2.1_tiny", 1024, 2]],
    }

    def trust(model, size, objects):
        return trust_region(Workload(model, size, 24, objects, 1), Candidate(), {"region": region})

    for inside in (("sam2.1_tiny", 1024, 2), ("sam2.1_tiny", 480, 3), ("sam2.1_large", 320, 1)):
        assert trust(*inside)["inside"], inside
    t = trust("sam2.1_large", 1024, 3)
    assert not t["inside"]
    assert ("sam2.1_large at 1024 px x 3 objects: never calibrated together (the largest "
            "calibrated with sam2.1_large: 384 px x 1 object)") in t["statement"]
    t = trust("sam2.1_tiny", 1024, 3)
    assert not t["inside"] and "512 px x 3 objects, 1024 px x 2 objects" in t["statement"]
    # beyond an axis's range both notes: 5 objects is above 3, and tiny at 1024 px with 3 (the
    # edge) never ran either
    t = trust("sam2.1_large", 1024, 5)
    assert "num_objects 5: 1.7x the largest calibrated (3)" in t["statement"]
    assert "sam2.1_large at 1024 px x 5 objects: never calibrated together" in t["statement"]
    assert "never calibrated together" not in trust("sam2.1_tiny", 512, 5)["statement"]
    # sam2_tiny is tiny's architecture twin: checked against tiny's runs
    assert not trust("sam2_tiny", 1024, 3)["inside"] and trust("sam2_tiny", 1024, 2)["inside"]


def test_the_shipped_trust_region_says_large_at_1024_px_was_never_calibrated():
    """The designed calibration runs sam2.1_large at 256 and 384 px only (design.py; the H200
    and CPU sets alike): the default workload's model and size were never run together."""
    model = MemoryModel.load()
    for kind in ("cpu", "cuda"):
        t = trust_region(Workload("sam2.1_large", 1024, 24, 1, 1), Candidate(),
                         model.calibration[kind])
        assert not t["inside"] and "never calibrated together" in t["statement"], kind


@pytest.mark.parametrize("every", [0, 30])
def test_max_frames_within_budget_is_the_largest_that_fits(every):
    m = _model()
    w = Workload("sam2.1_tiny", 1024, 100, 2, 1, prompt_every=every)
    budget = 8 * 2**30
    n = max_frames_within_budget(w, Candidate(), m, "cuda", budget, host_baseline=0)
    assert n and n > 1
    assert predict(w.with_frames(n), Candidate(), m, "cuda", 0).device_peak_bytes <= budget
    assert predict(w.with_frames(n + 1), Candidate(), m, "cuda", 0).device_peak_bytes > budget
    off = max_frames_within_budget(
        w, Candidate(offload_video_to_cpu=True), m, "cuda", budget, host_baseline=0
    )
    assert off > n  # frames on the host: more fit
    host = 32 * 2**30
    n_host = max_frames_within_budget(
        w, Candidate(offload_video_to_cpu=True), m, "cuda", budget, host, host_baseline=0
    )
    assert n_host < off  # the host budget now binds
    hp = predict(w.with_frames(n_host + 1), Candidate(offload_video_to_cpu=True), m, "cuda", 0)
    assert hp.host_peak_bytes > host or hp.device_peak_bytes > budget


def test_max_frames_is_null_when_the_peak_does_not_grow():
    m = _model()
    w = Workload("sam2.1_tiny", 1024, 100, 2, 1)
    assert (
        max_frames_within_budget(w, Candidate(strategy="stream"), m, "cuda", 8 * 2**30, None, 0)
        is None
    )
    assert max_frames_within_budget(w, Candidate(), m, "cuda", 2**20, None, 0) == 0


def test_synthetic_scenario_prompts_match_the_generator(cache):
    video = resolve_video(VideoConfig(num_frames=N, num_objects=3), cache)  # 270 x 480
    prompts = make_prompts(video, ScenarioConfig(reannotate_every=4), N)
    per_obj: dict[int, list[int]] = {}
    for p in prompts:
        per_obj.setdefault(p.obj_id, []).append(p.frame)
    firsts = sorted(min(v) for v in per_obj.values())
    assert firsts == sorted(fs[0] for fs in _synthetic_prompts(N, 3, 4))

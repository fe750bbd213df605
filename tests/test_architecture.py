"""The seams the architecture pass made: SAM 2 geometry from the adapter, one ranking for tune /
recommend / lookup, Candidate derived from KnobsConfig, typed steps, no silently dropped figure."""

from __future__ import annotations

import dataclasses
import re
import subprocess

import numpy as np
import pytest
import torch
from conftest import sam2tune_cmd

from sam2tune.adapter.arch import arch_of, arch_of_predictor
from sam2tune.adapter.build import build_predictor, needs_own_predictor
from sam2tune.adapter.session import FrameStep, PromptStep, Session
from sam2tune.config.presets import model_names, model_preset
from sam2tune.config.schema import KnobsConfig, ModelConfig, ScenarioConfig, VideoConfig
from sam2tune.config.store import compose_run
from sam2tune.memory_model.memory import Candidate, MemoryModel, Workload
from sam2tune.record import make_row
from sam2tune.scenario import make_prompts
from sam2tune.tune.recommend import recommend
from sam2tune.tune.tuner import TuneSpec, choose, run_tuner
from sam2tune.video.sources import resolve_video


@pytest.mark.slow
@pytest.mark.parametrize("name", model_names())
def test_model_constants_match_a_built_predictor_of_every_size(name, cache_root):
    """The memory model reads SAM 2's geometry from the packaged config without building; the
    session reads it from the built predictor. Both must agree for every preset."""
    m = model_preset(name, image_size=256)
    built = build_predictor(m, KnobsConfig(), torch.device("cpu"), cache_root)
    p = built.predictor
    from_config, from_predictor = arch_of(m.config_file), arch_of_predictor(p)
    assert from_config == from_predictor
    # and against SAM 2's own objects, not our reader: the memory attention width, the memory
    # encoder's output channels and the image encoder's first stage
    assert from_config.d_model == p.memory_attention.d_model
    assert from_config.mem_dim == p.maskmem_tpos_enc.shape[-1]
    assert from_config.embed_dim == p.image_encoder.trunk.blocks[0].dim
    assert from_config.num_maskmem == p.maskmem_tpos_enc.shape[0]


def test_needs_own_predictor_follows_build_time_knobs():
    m = ModelConfig()
    ref = KnobsConfig()
    for runtime in (
        KnobsConfig(offload_video_to_cpu=True),
        KnobsConfig(offload_state_to_cpu=True),
        KnobsConfig(strategy="stream"),
        KnobsConfig(dtype="bfloat16"),
        KnobsConfig(segment_frames=8),
    ):
        assert not needs_own_predictor(m, runtime, m, ref), runtime
    for build_time in (
        KnobsConfig(predictor="legacy_batched"),
        KnobsConfig(max_cond_frames_in_attn=2),
        KnobsConfig(vos_optimized=True),
    ):
        assert needs_own_predictor(m, build_time, m, ref), build_time
    assert needs_own_predictor(m, ref, dataclasses.replace(m, image_size=512), ref)


def test_candidate_is_a_subset_of_knobs_with_the_same_defaults():
    knobs = {f.name: f for f in dataclasses.fields(KnobsConfig)}
    for f in dataclasses.fields(Candidate):
        if f.name in ("image_size", "impl"):  # the resolution and the implementation: not knobs
            continue
        assert f.name in knobs, f"Candidate.{f.name} is not a KnobsConfig knob"
        assert f.default == knobs[f.name].default, f.name
    c = Candidate(offload_state_to_cpu=True, max_cond_frames_in_attn=3, strategy="release")
    assert Candidate.from_knobs(c.knobs()) == c
    row = {"offload_state_to_cpu": True, "max_cond_frames_in_attn": 3.0, "strategy": "release",
           "dtype": None, "segment_frames": float("nan")}  # a results row: floats and nulls
    assert Candidate.from_knobs(row) == c


def test_make_row_refuses_a_figure_that_is_not_a_column():
    cfg = compose_run(["device=cpu"])
    kw = dict(run_id="x", status="ok", error=None, num_frames=3, num_objects=1,
              num_cond_frames=1, version="t")
    row = make_row(cfg, measures={"fps": 2.0}, **kw)
    assert row["fps"] == 2.0
    with pytest.raises(ValueError, match="peak_gpu_bytes"):
        make_row(cfg, measures={"peak_gpu_bytes": 1}, **kw)


def test_session_yields_typed_steps(cache_root):
    m = ModelConfig(image_size=256)
    built = build_predictor(m, KnobsConfig(), torch.device("cpu"), cache_root)
    video = resolve_video(VideoConfig(num_frames=4, num_objects=2, height=64, width=96),
                          cache_root)
    prompts = make_prompts(video, ScenarioConfig(), video.num_frames)
    sess = Session(built.predictor, video.sam2_path, KnobsConfig())
    sess.init()
    steps = list(sess.track(prompts))
    sess.close()
    assert {type(s) for s in steps} == {PromptStep, FrameStep}
    assert [s.prompt for s in steps if isinstance(s, PromptStep)] == prompts
    frames = [s for s in steps if isinstance(s, FrameStep)]
    assert [f.frame_idx for f in frames] == list(range(min(p.frame for p in prompts), 4))
    for f in frames:
        assert f.masks.dtype == np.bool_ and f.masks.shape == (len(f.obj_ids), 64, 96)


def _model() -> MemoryModel:
    return MemoryModel.load()


@pytest.mark.parametrize("impls", [("sam2",), ("transformers",), ("sam2", "transformers")])
def test_tune_and_recommend_agree_on_the_same_workload_and_data(impls, tmp_path):
    """Same workload, budgets, model, data and implementations: the tuner (Optuna search +
    screen) and recommend (screen) give the same answer, of an implementation asked for; it fits
    by a fresh prediction (not the screen's), and the tuner searched every implementation asked
    for."""
    from sam2tune.memory_model.memory import predict

    w = Workload("sam2.1_tiny", 512, 1800, 3, 1, None, 155_851_016)
    m = _model()
    budget, host = 2 * 2**30, 16 * 2**30
    best_r, choices_r = recommend(w, budget, host, m, "cuda", None, impls)
    spec = TuneSpec(w, budget, host, "cuda", n_trials=5, results_dir=str(tmp_path), impls=impls)
    _, choices_t = run_tuner(spec, m, progress=False)
    best_t = choose(choices_t)
    assert best_r is not None and best_t is not None
    assert best_t.candidate == best_r.candidate
    assert best_r.candidate.impl in impls
    fresh = predict(w, best_r.candidate, m, "cuda")
    assert fresh.device_peak_bytes <= budget and fresh.host_peak_bytes <= host
    assert {c.candidate.impl for c in choices_t} == set(impls)


@pytest.mark.slow
def test_tune_and_recommend_commands_print_the_same_config(tmp_path):
    args = ["budget=3GiB", "host_budget=16GiB", "workload.num_frames=1800",
            "workload.image_size=512", "workload.num_objects=3", f"results_dir={tmp_path}"]
    rec = subprocess.run(sam2tune_cmd() + ["recommend"] + args, capture_output=True,
                         text=True, timeout=300)
    tune = subprocess.run(sam2tune_cmd() + ["tune", "n_trials=4"] + args, capture_output=True,
                          text=True, timeout=300)
    assert rec.returncode == 0, rec.stderr
    assert tune.returncode == 0, tune.stderr
    r = re.search(r"chosen: (.*)", rec.stdout)
    t = re.search(r"best: (.*)", tune.stdout)
    assert r and t, (rec.stdout, tune.stdout)
    assert r.group(1).strip() == t.group(1).strip()

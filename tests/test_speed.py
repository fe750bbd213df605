"""Speed you can plan with: steady-state timing, the speed model's fit and prediction, and the
answers that carry its figures with their provenance."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import warnings
from pathlib import Path

import pytest
from conftest import sam2tune_cmd

from sam2tune.memory_model.memory import Candidate, Workload
from sam2tune.speed_model.fit import Observation, fit, fit_and_evaluate
from sam2tune.speed_model.model import (
    COEFFS,
    SpeedModel,
    load_speed_model,
    predict_speed,
    speed_note,
    step_features,
)
from sam2tune.speed_model.timing import steady_timing


def test_steady_timing_leaves_the_warm_up_out():
    # the H200's bfloat16 run: frame 0 is the prompted frame, frame 1 the first tracked one
    steps = [0.039, 1.104, 0.060, 0.058, 0.060, 0.063]
    t = steady_timing(steps)
    assert t.fps == pytest.approx(1 / statistics.median([0.060, 0.058, 0.060, 0.063]))
    assert t.warmup_s == pytest.approx(0.039 + 1.104) and t.frames == 4
    assert 6 / sum(steps) < 5 < t.fps  # what the old all-frames figure read: 4.3 fps
    assert steady_timing([0.5]).warmup_s is None and steady_timing([]).fps is None


def _obs(
    model: str,
    S: int,
    k: int,
    step: float,
    dtype: str = "float32",
    predictor: str = "per_object",
    every: int = 0,
) -> Observation:
    frames = 12 * (1 + S // 512)  # loading: frames vary, so both of its terms are identified
    w = Workload(
        model, S, frames, k, 1, None, 0, video_height=270, video_width=480, prompt_every=every
    )
    c = Candidate(image_size=S, dtype=dtype, predictor=predictor)
    return Observation(
        f"r{model}{S}{k}{dtype}{predictor}",
        "h",
        "cuda",
        "GPU",
        w,
        c,
        k,
        step,
        0.2 + 0.01 * frames * 270 * 480 / 1e6,
    )


def test_the_fit_recovers_known_coefficients():
    truth = {"h": 0.004, "e": 0.02, "o": 0.008, "q": 0.003, "a": 0.001, "a2": 0.002}
    from sam2tune.memory_model.reads import memory_read

    obs = []
    for model in ("sam2.1_tiny", "sam2.1_small", "sam2.1_large"):
        for S in (256, 512, 1024):
            for k, every in ((1, 0), (2, 3), (5, 0), (3, 2)):  # re-prompting: more memories
                o = _obs(model, S, k, 1.0, every=every)
                m = int(memory_read(o.workload, o.candidate, S)["frames"])
                x = step_features(model, S, k, m)
                step = sum(truth[n] * v for n, v in zip(COEFFS, x, strict=True))
                obs.append(_obs(model, S, k, step, every=every))
                if every:
                    continue
                if model == "sam2.1_tiny" and S == 256:  # bf16 and batched: known factors
                    obs.append(_obs(model, S, k, 2.0 * step, dtype="bfloat16"))
                    base = truth["h"] + truth["e"] * x[1]
                    obs.append(
                        _obs(model, S, k, base + 0.5 * (step - base), predictor="legacy_batched")
                    )
    k = fit(obs)
    for n, v in truth.items():
        assert k[n] == pytest.approx(v, rel=1e-6), n
    assert k["bf16"] == pytest.approx(2.0) and k["legacy"] == pytest.approx(0.5)
    assert k["i0"] == pytest.approx(0.2) and k["i1"] == pytest.approx(0.01)


def test_a_supplement_from_another_machine_is_placed_by_its_anchors():
    """Runs of another machine 1.3x slower, at sizes the calibration lacks (768 / 1024 px) and
    at two it has (anchors): the placement recovers the machine's factor and the coefficients,
    and a supplement without an anchor is refused."""
    from sam2tune.memory_model.reads import memory_read
    from sam2tune.speed_model.fit import place

    truth = {"h": 0.004, "e": 0.02, "o": 0.008, "q": 0.003, "a": 0.001, "a2": 0.002}

    def obs(model: str, S: int, k: int, every: int = 0, g: float = 1.0) -> Observation:
        o = _obs(model, S, k, 1.0, every=every)
        m = int(memory_read(o.workload, o.candidate, S)["frames"])
        x = step_features(model, S, k, m)
        step = g * sum(truth[n] * v for n, v in zip(COEFFS, x, strict=True))
        return _obs(model, S, k, step, every=every)

    calib = [obs(m, S, k, every) for m in ("sam2.1_tiny", "sam2.1_small", "sam2.1_large")
             for S in (256, 384, 512) for k, every in ((1, 0), (2, 3), (5, 0), (3, 2))]
    sup = [obs("sam2.1_tiny", S, k, g=1.3) for S in (256, 512, 768, 1024) for k in (1, 2)]
    k, g, ratios = place(calib, sup)
    assert g == pytest.approx(1.3, rel=1e-6) and len(ratios) == 4  # the 256 and 512 px runs
    for n, v in truth.items():
        assert k[n] == pytest.approx(v, rel=1e-5, abs=1e-9), n
    with pytest.raises(ValueError, match="no anchor run at or below 512 px"):
        place(calib, [o for o in sup if o.workload.image_size > 512])


def test_end_to_end_is_loading_plus_every_frames_step():
    k = {"h": 0.01, "e": 0.0, "o": 0.02, "q": 0.0, "a": 0.0, "a2": 0.0, "i0": 1.0, "i1": 0.5}
    m = SpeedModel({"cuda": k}, {"cuda": {"runs": 3, "devices": ["NVIDIA H200"]}})
    w = Workload(
        "sam2.1_tiny",
        512,
        100,
        2,
        1,
        150,
        0,
        video_height=1000,
        video_width=1000,
        cond_frames=[[0], [50]],
    )
    p = predict_speed(w, Candidate(), m, "cuda")
    # oracle by hand: 100 frames x 10 ms + 150 object-frames x 20 ms; loading 1 + 0.5 x 100 MP
    assert p.end_to_end_s == pytest.approx(1.0 + 0.5 * 100 + 100 * 0.01 + 150 * 0.02)
    assert p.fps == pytest.approx(1 / (0.01 + 2 * 0.02))
    stream = predict_speed(w, Candidate(strategy="stream"), m, "cuda")
    assert stream.init_s == pytest.approx(1.0)  # stream loads no frames up front
    text, rests = speed_note(p, m, "cuda", 100, gpu="RTX 4090")
    assert "RTX 4090 was never calibrated" in rests and "NVIDIA H200" in rests
    assert "never calibrated" not in speed_note(p, m, "cuda", 100, gpu="H200")[1]
    assert predict_speed(w, Candidate(), m, "cpu") is None


def test_the_shipped_model_was_fitted_on_the_committed_records_and_holds_out():
    warnings.simplefilter("ignore")
    shipped = load_speed_model()
    model, ev = fit_and_evaluate(
        "results/gpu-nvidia-h200/calibration", "results/gpu-nvidia-h200/validation"
    )
    assert shipped.coeffs["cuda"] == pytest.approx(model.coeffs["cuda"])  # reproducible
    rnd = ev[ev["axis"] == "random"]["step_err"].abs()
    assert len(rnd) >= 10 and rnd.median() < 0.2  # measured steps it never saw


def test_the_shipped_cpu_model_is_the_calibration_with_its_large_size_supplement():
    """The CPU coefficients: the committed calibration, the object-batch runs and the committed
    large-size supplement (experiments/bench_speed_large.py), placed by its anchors; its own
    held-out large runs predicted within 20 % (they were 12-39 % fast before the a2 term)."""
    warnings.simplefilter("ignore")
    shipped = load_speed_model()
    sups = sorted(str(d) for d in Path("results/cpu-speed-large").glob("*/"))
    assert sups, "results/cpu-speed-large holds no supplement"
    model, ev = fit_and_evaluate("results/cpu-calibration", "results/cpu-validation",
                                 batch_dir="results/object-batch/speed", supplements=sups)
    assert shipped.coeffs["cpu"] == pytest.approx(model.coeffs["cpu"])  # reproducible
    assert shipped.coeffs["cpu"]["a2"] > 0
    large = ev[ev["axis"].str.startswith("supplement")]
    assert len(large) >= 4 and large["step_err"].abs().max() < 0.2
    assert large["image_size"].min() >= 800


@pytest.fixture(scope="module")
def ten_frame_run(tmp_path_factory, cache_root):
    """One real 10-frame CPU run (256 px): its report and what the CLI printed."""
    out = tmp_path_factory.mktemp("ten-frames")
    r = subprocess.run(
        sam2tune_cmd()
        + [
            "run",
            "device=cpu",
            "model.image_size=256",
            "video.num_frames=10",
            "video.height=64",
            "video.width=96",
            "probe.reference=false",
            f"cache_dir={cache_root}",
            f"results_dir={out}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-400:]
    (rep,) = [json.loads(p.read_text()) for p in out.glob("runs/*/report.json")]
    return rep, r.stdout


@pytest.mark.slow
def test_a_runs_fps_is_its_own_steady_step_time(ten_frame_run):
    rep, stdout = ten_frame_run
    timed = [t["step_s"] for t in rep["timeline"] if not t["tracked"]]
    assert rep["row"]["fps"] == pytest.approx(1 / statistics.median(timed[2:]))
    assert rep["row"]["warmup_s"] == pytest.approx(sum(timed[:2]))
    assert "steady" in rep["row"]["fps_method"] and "warm-up" in stdout


def test_predict_and_recommend_carry_fps_and_end_to_end_with_provenance(tmp_path):
    wl = [
        "workload.model=sam2.1_tiny",
        "workload.image_size=512",
        "workload.num_frames=900",
        "workload.num_objects=3",
    ]
    for gpu, calibrated in (("H200", True), ("RTX 4090", False)):
        out = subprocess.run(
            sam2tune_cmd()
            + [
                "recommend",
                f"gpu={gpu}",
                "impl=sam2",
                *wl,
                f"results_dir={tmp_path}",
                "format=json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-300:]
        d = json.loads(out.stdout)
        assert d["speed"]["fps"] > 0 and d["speed"]["end_to_end_s"] > d["speed"]["init_s"] > 0
        assert "NVIDIA H200" in d["speed"]["provenance"]
        assert ("never calibrated" in d["speed_provenance"]) is not calibrated
        assert d["speed"]["provenance"] == d["speed_provenance"]  # one provenance, JSON too
    p = subprocess.run(
        sam2tune_cmd() + ["predict", *wl, "format=json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    sp = json.loads(p.stdout)["speed"]
    assert sp["fps"] > 0 and "held-out error" in sp["provenance"]


def test_the_printed_speed_is_the_ranked_one_knobs_and_implementation_included():
    """The figure an answer prints carries the knobs the model does not cover as the ranking
    does (offload_state on a GPU: its sourced ratio; on the CPU nothing moves), and for
    transformers says it is sam2's figure (no transformers runs in the speed model)."""
    from sam2tune.speed_model.local import speed_answer
    from sam2tune.tune.space import SPEED_PRIOR, answer_speed, end_to_end_s

    m = load_speed_model()
    w = Workload("sam2.1_tiny", 512, 300, 2, 1, None, 155851016)
    off = Candidate(offload_state_to_cpu=True)
    plain = speed_answer(w, off, "cuda", model=m)[0]
    sp, _, rests = answer_speed(w, off, "cuda", model=m)
    ratio = SPEED_PRIOR["offload_state"][0]
    assert sp.fps == pytest.approx(plain.fps * ratio)
    assert sp.end_to_end_s == pytest.approx(end_to_end_s(off, w, "cuda"))  # what ranks it
    assert "offload_state 0.89x" in rests and sp.provenance == rests
    cpu = answer_speed(w, off, "cpu", model=m)
    assert cpu[0].fps == pytest.approx(speed_answer(w, off, "cpu", model=m)[0].fps)
    assert "nothing is moved" in cpu[2]
    hf = answer_speed(w, Candidate(impl="transformers"), "cuda", model=m)[2]
    assert "the speed model has no transformers runs" in hf


def test_the_encoder_timer_counts_each_step_and_puts_the_method_back():
    import torch

    from sam2tune.adapter.encoder import EncoderTimer, encoder_entry

    class Model(torch.nn.Module):
        def forward_image(self, x):
            time.sleep(0.01)
            return x + 1

    m = Model()
    with EncoderTimer(*encoder_entry(m), cuda=False) as timer:
        assert "forward_image" in vars(m)
        m.forward_image(torch.zeros(1))  # before a step (init_state's warm-up): no frame's
        timer.begin_step()
        assert m.forward_image(torch.zeros(1)).item() == 1.0
        m.forward_image(torch.zeros(1))
        assert 0.02 <= timer.step_s() < 0.2
        timer.begin_step()
        assert timer.step_s() == 0.0
    assert "forward_image" not in vars(m)  # the class's method again
    own = m.forward_image  # an instance attribute already there (a compiled one) is kept
    m.forward_image = own
    with EncoderTimer(m, "forward_image", cuda=False):
        assert m.forward_image is not own
    assert m.forward_image is own
    assert encoder_entry(object()) is None  # no encoder call: the split is absent


def _steady(rows, key):
    return statistics.median([t[key] for t in rows if not t["tracked"]][2:])


@pytest.mark.slow
def test_a_runs_step_splits_into_encoder_tracking_and_host(ten_frame_run):
    import os

    rep, stdout = ten_frame_run
    prompted = {p["frame"] for p in rep["prompts"]}
    rows = rep["timeline"]
    assert len(rows) == 10
    for t in rows:
        assert {"encoder_s", "tracking_s", "host_s"} <= set(t), t
        assert 0 <= t["encoder_s"] < t["step_s"] and t["host_s"] > 0
        assert t["encoder_s"] + t["tracking_s"] == pytest.approx(t["step_s"], abs=2e-6)
        # SAM 2 encoded a prompted frame at its prompt; every other frame within its own step
        assert (t["encoder_s"] == 0) == (t["frame"] in prompted), t
    row = rep["row"]
    for key in ("encoder_s", "tracking_s", "host_s"):  # the oracle: recomputed from the timeline
        assert row[key] == pytest.approx(_steady(rows, key), abs=1e-9), key
    assert row["encoder_s"] + row["tracking_s"] == pytest.approx(1 / row["fps"], rel=0.5)
    assert "encoder" in stdout and "host" in stdout
    # the cores each step had: the process's CPU time within the step, at most every core's
    cpus = len(os.sched_getaffinity(0))
    for t in rows:
        assert 0 < t["cpu_s"] <= t["step_s"] * cpus * 1.05 + 0.002, t
    steady = [t["cpu_s"] / t["step_s"] for t in rows if not t["tracked"]][2:]
    assert row["step_cores"] == pytest.approx(statistics.median(steady), rel=1e-3)


@pytest.mark.slow
def test_the_encoders_time_grows_with_the_image_size(tmp_path):
    """An independent fact: the Hiera encoder's work grows with the pixels (4x from 256 to 512
    px), so its timed part of the step must too. One thread, so that another process on the CPU
    slows both sizes alike (3.4-3.6x measured on this 2-core CPU under load)."""
    import torch

    from sam2tune.adapter.build import build_predictor
    from sam2tune.config.schema import KnobsConfig, ModelConfig, ScenarioConfig, VideoConfig
    from sam2tune.runner.propagate import propagate
    from sam2tune.scenario import make_prompts
    from sam2tune.video.sources import resolve_video

    video = resolve_video(VideoConfig(num_frames=6, num_objects=1, height=64, width=96), tmp_path)
    prompts = make_prompts(video, ScenarioConfig(), video.num_frames)
    cpu, threads = torch.device("cpu"), torch.get_num_threads()
    enc = {}
    torch.set_num_threads(1)
    try:
        for size in (256, 512):
            pred = build_predictor(ModelConfig(image_size=size), KnobsConfig(), cpu, tmp_path)
            res = propagate(pred.predictor, video, prompts, KnobsConfig(), cpu)
            assert "forward_image" not in vars(pred.predictor)  # SAM 2's method put back
            enc[size] = res.encoder_s
            assert 0 < res.encoder_s < 1 / res.fps
    finally:
        torch.set_num_threads(threads)
    assert enc[512] / enc[256] > 2, enc


def test_object_batches_count_each_prompt_groups_batches():
    from sam2tune.memory_model.reads import object_batches

    # 7 objects: 4 prompted on frame 0, 2 on frame 3, 1 on frames 0 and 5 (hand count below)
    cond = [[0], [0], [0], [0], [3], [3], [0, 5]]
    w = Workload("sam2.1_tiny", 256, 8, 7, 1, None, 0, video_height=270, video_width=480,
                 cond_frames=cond)
    for k, calls in ((1, 7), (2, 2 + 1 + 1), (3, 2 + 1 + 1), (4, 1 + 1 + 1), (0, 3), (16, 3)):
        assert object_batches(w, Candidate(object_batch=k)) == calls, k
    assert object_batches(w, Candidate(object_batch=0, predictor="legacy_batched")) == 7


def test_the_batch_term_fit_recovers_known_phi_and_psi():
    from sam2tune.speed_model.fit import BatchObservation, fit_batch
    from sam2tune.speed_model.model import batch_factor

    phi, psi = 0.4, 0.01
    obs = []
    for n in (4, 8, 16, 24):
        for calls in {1, 2, n // 4, n // 2}:
            g = 1 - phi * (n - calls) / (n - 1) + psi * (n / calls - 1)  # the term, written out
            w = Workload("sam2.1_tiny", 256, 8, n, 1, None, 0, video_height=270, video_width=480)
            obs.append(BatchObservation(f"r{n}{calls}", w, Candidate(object_batch=2), n, calls,
                                        g, g, g))
    k = fit_batch(obs)
    assert k["batch_phi"] == pytest.approx(phi, rel=1e-6)
    assert k["batch_psi"] == pytest.approx(psi, rel=1e-6)
    assert batch_factor(k, 16, 16) == 1.0 and batch_factor(k, 1, 1) == 1.0
    # without a fit: the legacy batched factor at one call, 1 at one call per object
    assert batch_factor({"legacy": 0.25}, 16, 1) == pytest.approx(0.25)
    assert batch_factor({"legacy": 0.25}, 16, 6) == pytest.approx(0.25 + 0.75 * 5 / 15)


def test_the_shipped_cpu_model_scales_object_batches_by_its_fitted_term():
    m = load_speed_model()
    k = m.coeffs["cpu"]
    assert {"batch_phi", "batch_psi"} <= set(k)  # fitted on results/object-batch/speed
    w = Workload("sam2.1_tiny", 256, 10, 16, 1, None, 0, video_height=270, video_width=480)
    one = predict_speed(w, Candidate(object_batch=1), m, "cpu")
    four = predict_speed(w, Candidate(object_batch=4), m, "cpu")
    assert one and four
    x = step_features("sam2.1_tiny", 256, 16, 0)
    base = k["h"] * x[0] + k["e"] * x[1]  # the encoder's part: no object in it
    # 16 objects prompted together, K = 4: 4 calls; the term written out from its coefficients
    g = 1 - k["batch_phi"] * (16 - 4) / 15 + k["batch_psi"] * (16 / 4 - 1)
    assert four.step_s - base == pytest.approx(g * (one.step_s - base), rel=1e-9)
    assert "object-batch term fitted on" in four.provenance
    assert "object-batch" not in one.provenance
    cuda = predict_speed(w, Candidate(object_batch=4), m, "cuda")
    assert cuda and "not fitted on object-batch runs" in cuda.provenance


def _probe_runs(
    m: SpeedModel, factor: float | dict[int, float], cores: float = 1.9
) -> list[dict]:
    """Host-probe runs (256 / 512 px, or the sizes ``factor`` names; 8 frames, 1 tiny object,
    stock) of a machine ``factor`` times slower than the calibration's (a number, or one per
    size): steady steps = factor x the shipped prediction; the warm-up frames, a prompted and a
    tracked frame far slower (they must be left out)."""
    import dataclasses

    runs = []
    for s in (factor if isinstance(factor, dict) else (256, 512)):
        w = Workload("sam2.1_tiny", s, 8, 1, 1, 8, weights_bytes=155851016,
                     video_height=270, video_width=480, cond_frames=[[0]])
        p = predict_speed(dataclasses.replace(w, cond_frames=None), Candidate(), m, "cpu")
        assert p is not None
        t = (factor[s] if isinstance(factor, dict) else factor) * p.step_s
        steps = [[0, 1, 9.0, False, 18.0], [1, 1, 9.0, False, 18.0],  # warm-up
                 [2, 1, t * 0.98, False, t * cores], [3, 1, 9.0, True, 18.0],  # tracked
                 [4, 1, t, False, t * cores], [5, 1, 9.0, False, 18.0],  # prompted again
                 [6, 1, t * 1.02, False, t * cores]]
        runs.append({"image_size": s, "workload": dataclasses.asdict(w), "steps": steps,
                     "prompted": [0, 5], "threads": 2})
    return runs


def test_the_cpu_speed_is_scaled_to_this_machine_by_its_probe(monkeypatch):
    from sam2tune.memory_model import baseline
    from sam2tune.speed_model import local
    from sam2tune.speed_model.local import speed_answer

    m = load_speed_model()
    info = local.local_scale(m, {"runs": _probe_runs(m, 1.5)})
    assert info["scale"] == pytest.approx(1.5, rel=1e-9)  # warm-up / tracked / prompted left out
    lm = local.localised(m, {"runs": _probe_runs(m, 1.5)})
    # a workload the probe did not use: every time term 1.5 x, the factors as they were
    w = Workload("sam2.1_small", 384, 30, 3, 1, None, 0, video_height=270, video_width=480)
    for c in (Candidate(), Candidate(dtype="bfloat16"), Candidate(object_batch=0),
              Candidate(strategy="stream", stream_prefetch=0)):
        a, b = predict_speed(w, c, m, "cpu"), predict_speed(w, c, lm, "cpu")
        assert a and b
        assert b.step_s == pytest.approx(1.5 * a.step_s, rel=1e-9)
        assert b.end_to_end_s == pytest.approx(1.5 * a.end_to_end_s, rel=1e-9)
        assert "scaled x1.50 to this machine by its probe" in b.provenance
    assert lm.coeffs["cuda"] == m.coeffs["cuda"]
    # the answers use it: speed_answer on the CPU, this machine's probe from the host baseline
    monkeypatch.delenv(local.SPEED_TERMS_ENV, raising=False)
    value = {"rss_bytes": 1, "local": {"runs": _probe_runs(m, 1.5)}}
    monkeypatch.setattr(baseline, "host_baseline", lambda kind="cpu", **_: value)
    sp, _, rests = speed_answer(w, Candidate(), "cpu")
    assert sp and sp.step_s == pytest.approx(1.5 * predict_speed(w, Candidate(), m, "cpu").step_s)
    assert "scaled x1.50" in rests
    cuda, _, rests = speed_answer(w, Candidate(), "cuda")  # a GPU's speed is not the host's
    assert cuda and cuda.step_s == predict_speed(w, Candidate(), m, "cuda").step_s
    assert "scaled" not in rests
    monkeypatch.setenv(local.SPEED_TERMS_ENV, "calibrated")
    sp, _, rests = speed_answer(w, Candidate(), "cpu")
    assert sp and sp.step_s == predict_speed(w, Candidate(), m, "cpu").step_s
    # a probe that ran beside other processes (0.8 of 2 cores) is not this machine's speed
    monkeypatch.setattr(local, "_cpus", lambda: 2)
    busy = local.localised(m, {"runs": _probe_runs(m, 3.0, cores=0.8)})
    assert busy.coeffs["cpu"] == m.coeffs["cpu"]
    why = busy.calibration["cpu"]["local"]["why"]
    assert "ran beside other processes" in why and "0.80 of 2 cores" in why
    p = predict_speed(w, Candidate(), busy, "cpu")
    assert p and "not scaled to this machine (the probe ran beside" in p.provenance
    failed = local.localised(m, {"error": "host probe: the 512 px run ended oom"})
    assert failed.calibration["cpu"]["local"]["why"].endswith("ended oom")


def test_the_local_scale_grows_with_the_step_as_the_probe_measured_it():
    """A machine 1.2x the calibration at the probe's 256 px step and 1.8x at its 512 px step:
    a step between, beyond or below them takes the ratio of the power law through the two
    points (written out here from the probe's own calibrated steps); loading the mean ratio."""
    import math

    from sam2tune.speed_model import local

    m = load_speed_model()
    runs = _probe_runs(m, {256: 1.2, 512: 1.8})
    t = {}
    for r in runs:
        w = Workload(**{**r["workload"], "cond_frames": None})
        p = predict_speed(w, Candidate(), m, "cpu")
        assert p
        t[r["image_size"]] = p.step_s
    slope = math.log(1.8 / 1.2) / math.log(t[512] / t[256])
    assert 0 < slope < local.MAX_EXPONENT  # the case this test is about: not clamped
    lm = local.localised(m, {"runs": runs})
    flat = local.localised(m, {"runs": runs}, shape=False)
    for w in (Workload("sam2.1_tiny", 384, 30, 2, 1, None, 0, video_height=270, video_width=480),
              Workload("sam2.1_base_plus", 768, 30, 3, 1, None, 0, video_height=270,
                       video_width=480),
              Workload("sam2.1_tiny", 192, 30, 1, 1, None, 0, video_height=270,
                       video_width=480)):
        a, b, f = (predict_speed(w, Candidate(), x, "cpu") for x in (m, lm, flat))
        assert a and b and f
        ratio = 1.2 * (a.step_s / t[256]) ** slope
        assert b.step_s == pytest.approx(ratio * a.step_s, rel=1e-9)
        assert f.step_s == pytest.approx(math.sqrt(1.2 * 1.8) * a.step_s, rel=1e-9)
        assert b.init_s == pytest.approx(math.sqrt(1.2 * 1.8) * a.init_s, rel=1e-9)
        assert f"the step's time^{slope:.2f}" in b.provenance
    # two short runs far apart in ratio (0.5x and 3x) are the probe's noise: the power is cut
    wild = local.local_scale(m, {"runs": _probe_runs(m, {256: 0.5, 512: 3.0})})
    assert wild["clamped"] and wild["exponent"] == local.MAX_EXPONENT
    # faster at the bigger step: one scale for every step (the mean ratio), said so
    down = local.localised(m, {"runs": _probe_runs(m, {256: 1.8, 512: 1.2})})
    w = Workload("sam2.1_small", 640, 30, 2, 1, None, 0, video_height=270, video_width=480)
    a, b = predict_speed(w, Candidate(), m, "cpu"), predict_speed(w, Candidate(), down, "cpu")
    assert a and b and b.step_s == pytest.approx(math.sqrt(1.8 * 1.2) * a.step_s, rel=1e-9)
    assert "cut to 0" in b.provenance


def test_the_probes_three_sizes_measure_the_growth_of_a_machine_that_follows_a_power_law():
    """A machine whose ratio to the calibration is exactly c x t^q at the probe's three sizes
    (t the calibrated step): the scale recovers q and predicts c x t^q x t at steps the probe
    did not run; a noisy middle point moves the power less than it would between two points."""
    import math

    from sam2tune.memory_model.host_probe import PROBE_SIZES
    from sam2tune.speed_model import local

    assert len(PROBE_SIZES) == 3
    m = load_speed_model()
    t = {}
    for s in PROBE_SIZES:
        w = Workload("sam2.1_tiny", s, 8, 1, 1, 8, weights_bytes=155851016,
                     video_height=270, video_width=480)
        p = predict_speed(w, Candidate(), m, "cpu")
        assert p
        t[s] = p.step_s
    c, q = 1.3, 0.2
    runs = _probe_runs(m, {s: c * t[s] ** q for s in PROBE_SIZES})
    info = local.local_scale(m, {"runs": runs})
    assert info["exponent"] == pytest.approx(q, abs=1e-9) and not info["clamped"]
    lm = local.localised(m, {"runs": runs})
    for w in (Workload("sam2.1_tiny", 1024, 30, 1, 1, None, 0, video_height=270,
                       video_width=480),
              Workload("sam2.1_base_plus", 448, 30, 3, 1, None, 0, video_height=270,
                       video_width=480)):
        a, b = predict_speed(w, Candidate(), m, "cpu"), predict_speed(w, Candidate(), lm, "cpu")
        assert a and b
        assert b.step_s == pytest.approx(c * a.step_s ** q * a.step_s, rel=1e-9)
    # the middle point 20 % off the law: the least-squares power through three points
    noisy = {s: c * t[s] ** q * (1.2 if s == PROBE_SIZES[1] else 1.0) for s in PROBE_SIZES}
    three = local.local_scale(m, {"runs": _probe_runs(m, noisy)})["fitted"]
    two = local.local_scale(m, {"runs": _probe_runs(m, {s: noisy[s] for s in PROBE_SIZES[:2]})})
    assert abs(three - q) < abs(two["fitted"] - q)
    x = [math.log(t[s]) for s in PROBE_SIZES]
    y = [math.log(noisy[s]) for s in PROBE_SIZES]
    mx, my = sum(x) / 3, sum(y) / 3
    ls = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum((a - mx) ** 2 for a in x)
    assert three == pytest.approx(ls, rel=1e-9)

"""Speed you can plan with: steady-state timing, the speed model's fit and prediction, and the
answers that carry its figures with their provenance."""

from __future__ import annotations

import json
import statistics
import subprocess
import warnings

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


def _obs(model: str, S: int, k: int, step: float, dtype: str = "float32",
         predictor: str = "per_object", every: int = 0) -> Observation:
    frames = 12 * (1 + S // 512)  # loading: frames vary, so both of its terms are identified
    w = Workload(model, S, frames, k, 1, None, 0, video_height=270, video_width=480,
                 prompt_every=every)
    c = Candidate(image_size=S, dtype=dtype, predictor=predictor)
    return Observation(f"r{model}{S}{k}{dtype}{predictor}", "h", "cuda", "GPU", w, c, k, step,
                       0.2 + 0.01 * frames * 270 * 480 / 1e6)


def test_the_fit_recovers_known_coefficients():
    truth = {"h": 0.004, "e": 0.02, "o": 0.008, "q": 0.003, "a": 0.001}
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
                    obs.append(_obs(model, S, k, base + 0.5 * (step - base),
                                    predictor="legacy_batched"))
    k = fit(obs)
    for n, v in truth.items():
        assert k[n] == pytest.approx(v, rel=1e-6), n
    assert k["bf16"] == pytest.approx(2.0) and k["legacy"] == pytest.approx(0.5)
    assert k["i0"] == pytest.approx(0.2) and k["i1"] == pytest.approx(0.01)


def test_end_to_end_is_loading_plus_every_frames_step():
    k = {"h": 0.01, "e": 0.0, "o": 0.02, "q": 0.0, "a": 0.0, "i0": 1.0, "i1": 0.5}
    m = SpeedModel({"cuda": k}, {"cuda": {"runs": 3, "devices": ["NVIDIA H200"]}})
    w = Workload("sam2.1_tiny", 512, 100, 2, 1, 150, 0, video_height=1000, video_width=1000,
                 cond_frames=[[0], [50]])
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
    model, ev = fit_and_evaluate("results/gpu-nvidia-h200/calibration",
                                 "results/gpu-nvidia-h200/validation")
    assert shipped.coeffs["cuda"] == pytest.approx(model.coeffs["cuda"])  # reproducible
    rnd = ev[ev["axis"] == "random"]["step_err"].abs()
    assert len(rnd) >= 10 and rnd.median() < 0.2  # measured steps it never saw


@pytest.mark.slow
def test_a_runs_fps_is_its_own_steady_step_time(tmp_path, cache_root):
    r = subprocess.run(sam2tune_cmd() + [
        "run", "device=cpu", "model.image_size=256", "video.num_frames=10", "video.height=64",
        "video.width=96", "probe.reference=false", f"cache_dir={cache_root}",
        f"results_dir={tmp_path}"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-400:]
    (rep,) = [json.loads(p.read_text()) for p in tmp_path.glob("runs/*/report.json")]
    timed = [t["step_s"] for t in rep["timeline"] if not t["tracked"]]
    assert rep["row"]["fps"] == pytest.approx(1 / statistics.median(timed[2:]))
    assert rep["row"]["warmup_s"] == pytest.approx(sum(timed[:2]))
    assert "steady" in rep["row"]["fps_method"] and "warm-up" in r.stdout


def test_predict_and_recommend_carry_fps_and_end_to_end_with_provenance(tmp_path):
    wl = ["workload.model=sam2.1_tiny", "workload.image_size=512", "workload.num_frames=900",
          "workload.num_objects=3"]
    for gpu, calibrated in (("H200", True), ("RTX 4090", False)):
        out = subprocess.run(sam2tune_cmd() + ["recommend", f"gpu={gpu}", "impl=sam2", *wl,
                                               f"results_dir={tmp_path}", "format=json"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-300:]
        d = json.loads(out.stdout)
        assert d["speed"]["fps"] > 0 and d["speed"]["end_to_end_s"] > d["speed"]["init_s"] > 0
        assert "NVIDIA H200" in d["speed"]["provenance"]
        assert ("never calibrated" in d["speed_provenance"]) is not calibrated
    p = subprocess.run(sam2tune_cmd() + ["predict", *wl, "format=json"], capture_output=True,
                       text=True, timeout=300)
    sp = json.loads(p.stdout)["speed"]
    assert sp["fps"] > 0 and "held-out error" in sp["provenance"]

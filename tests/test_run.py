"""Real isolated runs: SAM 2 tiny, random-init, 256 px, a few frames, CPU."""

import json
import subprocess

import numpy as np
import pytest
from conftest import small_run_cmd

import sam2tune
from sam2tune.record import COLUMNS
from sam2tune.runner.launcher import run_isolated

S = 256


@pytest.mark.slow
def test_record_is_complete_and_plausible(small):
    cfg = small("video.num_objects=2", "video.num_frames=8")
    out = run_isolated(cfg)
    r = out.row
    assert set(c.name for c in COLUMNS) <= set(r)
    assert r["status"] == "ok" and r["error"] is None
    assert r["weights"] == "random-init" and r["device"] == "cpu" and r["device_name"]
    assert r["frames_bytes"] == 8 * 3 * S * S * 4
    assert r["num_frames"] == 8 and r["num_objects"] == 2 and r["num_cond_frames"] == 2
    assert r["state_bytes"] > 0 and r["cached_features_bytes"] > 0
    assert r["activation_peak_bytes"] > 0
    assert r["est_device_peak_bytes"] >= (
        r["weights_bytes"] + r["frames_bytes"] + r["state_bytes"] + r["activation_peak_bytes"]
    )
    assert r["peak_host_rss_bytes"] > r["weights_bytes"]
    assert r["cuda_max_allocated_bytes"] is None and r["nvml_peak_device_bytes"] is None
    assert 0 <= r["iou_gt_mean"] <= 1 and r["iou_ref_mean"] == 1.0  # its own reference
    assert r["fps"] > 0 and r["init_s"] > 0 and r["total_s"] > r["init_s"]
    rep = json.loads(out.report_path.read_text())
    assert [t["frame"] for t in rep["timeline"]] == list(range(8))
    assert all(t["frames_bytes"] == r["frames_bytes"] for t in rep["timeline"])
    assert rep["timeline"][-1]["state_bytes"] == r["state_bytes"]
    assert set(rep["per_object"]) == {"1", "2"}
    env = rep["environment"]
    assert env["torch"] and env["sam2"] == "1.1.0" and env["sam2tune"] and env["cpu"]
    assert rep["memory_provenance"]["est_device_peak_bytes"].startswith("estimated")
    assert rep["memory_provenance"]["peak_host_rss_bytes"].startswith("measured")
    assert "census" in rep["estimate"]["method"]
    assert (out.report_path.parent / "config.json").is_file()
    df = sam2tune.load_results(cfg.results_dir)
    assert len(df) == 1 and df.iloc[0].run_id == r["run_id"]


@pytest.mark.slow
def test_entering_object_is_prompted_on_its_first_frame(small):
    cfg = small("video.num_objects=2", "video.num_frames=8")
    out = run_isolated(cfg)
    rep = json.loads(out.report_path.read_text())
    first = {p["obj_id"]: p["frame"] for p in rep["prompts"]}
    assert first[1] == 0 and first[2] >= 1
    objects = [t["objects"] for t in rep["timeline"]]
    assert objects[first[2] - 1] == 1 and objects[first[2]] == 2


@pytest.mark.slow
def test_offload_knobs_are_lossless_and_leave_the_device(small, tmp_path):
    res = tmp_path / "r"
    stock = run_isolated(small("video.num_frames=8", results=res)).row
    off = run_isolated(
        small(
            "video.num_frames=8",
            "knobs.offload_video_to_cpu=true",
            "knobs.offload_state_to_cpu=true",
            results=res,
        )
    ).row
    assert off["status"] == "ok" and off["iou_ref_mean"] == 1.0
    assert off["frames_bytes"] == stock["frames_bytes"]  # still held, on the host
    saved = stock["est_device_peak_bytes"] - off["est_device_peak_bytes"]
    assert saved >= stock["frames_bytes"]
    assert len(sam2tune.load_results(res)) == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "override",
    ["scenario.prompt=mask", "knobs.predictor=legacy_batched", "knobs.max_cond_frames_in_attn=2"],
)
def test_other_prompts_and_knobs_run_and_are_compared_with_the_reference(small, override):
    r = run_isolated(small(override, "scenario.reannotate_every=2", "video.num_frames=7")).row
    assert r["status"] == "ok", r["error"]
    assert r["num_cond_frames"] >= 4
    assert 0 <= r["iou_ref_mean"] <= 1


@pytest.mark.slow
def test_tight_host_budget_is_oom_and_the_next_run_succeeds(small, tmp_path):
    res = tmp_path / "r"
    oom = run_isolated(small("limits.host_memory_budget=300MiB", results=res)).row
    assert oom["status"] == "oom" and "memory" in oom["error"].lower()
    assert oom["weights"] == "random-init" and oom["peak_host_rss_bytes"] > 0
    ok = run_isolated(small(results=res)).row
    assert ok["status"] == "ok"
    assert list(sam2tune.load_results(res).status) == ["oom", "ok"]


@pytest.mark.slow
def test_timeout_is_recorded(small):
    r = run_isolated(small("limits.timeout_s=2")).row
    assert r["status"] == "timeout" and "timeout" in r["error"]
    assert len(sam2tune.load_results(small().results_dir)) == 1


@pytest.mark.slow
def test_concurrent_runs_lose_no_rows(tmp_path, cache_root):
    res = tmp_path / "shared"
    cmd = small_run_cmd(cache_root, res)
    procs = [
        subprocess.Popen(
            cmd + [f"video.seed={i}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for i in range(3)
    ]
    for p in procs:
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, out[-2000:]
    df = sam2tune.load_results(res)
    assert len(df) == 3 and set(df.status) == {"ok"} and df.run_id.is_unique


@pytest.mark.slow
def test_a_real_checkpoint_is_loaded_and_hashed(small, tmp_path):
    import hashlib

    import torch

    from sam2tune.adapter.build import build_predictor
    from sam2tune.config.schema import KnobsConfig, ModelConfig

    b = build_predictor(
        ModelConfig(image_size=S, weights_seed=3), KnobsConfig(), torch.device("cpu"), tmp_path
    )
    (tmp_path / "mine").mkdir()  # the user's own folder: sam2tune writes nothing into it
    ckpt = tmp_path / "mine" / "sam2.1_hiera_tiny.pt"
    torch.save({"model": b.predictor.state_dict()}, ckpt)
    r = run_isolated(small(f"model.checkpoint={ckpt}")).row
    assert r["status"] == "ok"
    assert r["weights"] == "sha256:" + hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert [p.name for p in ckpt.parent.iterdir()] == [ckpt.name]


@pytest.mark.slow
def test_mp4_goes_through_sam2s_own_loader(small, tmp_path):
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("decord")
    from PIL import Image

    from sam2tune.video.sources import _palette
    from sam2tune.video.synthetic import SyntheticSpec, render_video

    (tmp_path / "ann").mkdir()
    w = cv2.VideoWriter(str(tmp_path / "v.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 128))
    for t, (f, lab) in enumerate(render_video(SyntheticSpec(5, 2, 128, 160, 0))):
        w.write(f[..., ::-1])
        im = Image.fromarray(lab, mode="P")
        im.putpalette(_palette())
        im.save(tmp_path / "ann" / f"{t:05d}.png")
    w.release()
    r = run_isolated(
        small(
            "video=mp4",
            "video.num_frames=null",  # SAM 2 loads the whole file
            f"video.path={tmp_path / 'v.mp4'}",
            f"video.annotations={tmp_path / 'ann'}",
        )
    ).row
    assert r["status"] == "ok", r["error"]
    assert r["num_frames"] == 5 and r["frames_bytes"] == 5 * 3 * S * S * 4


def _frames_with_two_annotations(root):
    """One JPEG folder and two annotation folders that put the object in different places."""
    from PIL import Image

    jpg = root / "jpg"
    jpg.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for t in range(4):
        Image.fromarray((rng.random((96, 128, 3)) * 255).astype(np.uint8)).save(jpg / f"{t:05d}.jpg")
    anns = []
    for k, (y, x) in enumerate([(10, 10), (50, 70)]):
        ann = root / f"ann{k}"
        ann.mkdir()
        for t in range(4):
            lab = np.zeros((96, 128), np.uint8)
            lab[y : y + 30, x : x + 40] = 1
            im = Image.fromarray(lab, mode="P")
            im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
            im.save(ann / f"{t:05d}.png")
        anns.append(ann)
    return jpg, anns


@pytest.mark.slow
def test_reference_is_keyed_by_the_prompts_and_a_damaged_cache_is_recomputed(small, tmp_path):
    """Same frames, other annotations (other prompts), one results dir: each run is compared
    with its own reference, so a lossless knob agrees exactly with both."""
    jpg, anns = _frames_with_two_annotations(tmp_path / "v")
    res = tmp_path / "r"
    rows = []
    for ann in anns:
        video = ["video=jpeg_dir", "video.num_frames=null", f"video.path={jpg}",
                 f"video.annotations={ann}"]
        run_isolated(small(*video, results=res))  # the reference (every knob off)
        rows.append(run_isolated(small(*video, "knobs.offload_video_to_cpu=true", results=res)).row)
    assert [r["iou_ref_mean"] for r in rows] == [1.0, 1.0]
    refs = sorted((res / ".cache" / "refs").glob("*.npz"))
    assert len(refs) == 2  # one reference per set of prompts
    for p in refs:
        p.write_bytes(p.read_bytes()[:50])  # damage both
    video = ["video=jpeg_dir", "video.num_frames=null", f"video.path={jpg}",
             f"video.annotations={anns[0]}"]
    out = run_isolated(small(*video, "knobs.offload_video_to_cpu=true", results=res))
    assert out.row["status"] == "ok" and out.row["iou_ref_mean"] == 1.0
    rep = json.loads(out.report_path.read_text())
    assert "damaged" in rep["reference"]["cache_error"]
    log = (out.report_path.parent / "run.log").read_text()
    assert "unusable" in log and "recomputing" in log


@pytest.mark.parametrize(
    "exc,budget,status",
    [
        (MemoryError(), False, "oom"),
        (RuntimeError("could not create a primitive"), True, "oom"),  # oneDNN under a budget
        (RuntimeError("could not create a primitive"), False, "error"),
        (RuntimeError("std::bad_alloc"), False, "oom"),
        (RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 8 GB"),
         False, "oom"),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), False, "oom"),
        (ValueError("shapes do not match"), True, "error"),
    ],
)
def test_allocation_failures_are_oom(exc, budget, status):
    from sam2tune.runner.child import classify_failure

    assert classify_failure(exc, host_budget=budget) == status


@pytest.mark.slow
def test_device_budget_on_the_cpu_is_checked_against_the_estimate(small):
    r = run_isolated(small("limits.device_memory_budget=100MiB", "probe.reference=false")).row
    assert r["status"] == "oom" and "emulated" in r["error"]
    assert "limits.device_memory_budget=100MiB" in r["error"] and r["est_device_peak_bytes"]


@pytest.mark.slow
def test_a_single_run_shows_frames_fps_and_eta(tmp_path, capsys):
    import sys

    from sam2tune.runner.launcher import _wait_with_progress
    from sam2tune.runner.measure import PROGRESS_TAG

    log = tmp_path / "run.log"
    script = (
        "import sys, time\n"
        "for i in range(1, 4):\n"
        f"    print('{PROGRESS_TAG}', i, 10, i * 0.5, file=sys.stderr, flush=True)\n"
        "    time.sleep(0.6)\n"
    )
    with open(log, "ab") as f:
        proc = subprocess.Popen([sys.executable, "-c", script], stderr=f)
        _wait_with_progress(proc, 30, log, "R1", interval_s=0.0)
    err = capsys.readouterr().err
    import re

    seen = re.findall(r"run R1: frame (\d+)/10, 2\.00 fps, ETA (\d+) s", err)
    assert seen and all(int(eta) == int((10 - int(d)) / 2) for d, eta in seen)


def test_progress_is_read_after_sam2s_progress_bar_on_the_same_line(tmp_path):
    """SAM 2's tqdm bar ends in a carriage return, so the child's progress tag follows it on the
    same line of the run log; the parent's progress line must still find the latest one."""
    from sam2tune.runner.launcher import _last_progress
    from sam2tune.runner.measure import PROGRESS_TAG

    log = tmp_path / "run.log"
    log.write_text(
        f"{PROGRESS_TAG} 1 3600 0.500\n"
        + "".join(
            f"propagate in video:  {t}%|#| {t}/900 [00:01<00:08, 1.6it/s]\r"
            f"{PROGRESS_TAG} {t} 3600 {t * 0.6:.3f}\n"
            for t in range(2, 200)
        )
        + "propagate in video:  22%|#| 200/900 [00:01<00:08, 1.6it/s]\r"  # a bar, no tag yet
    )
    assert _last_progress(log) == (199, 3600, round(199 * 0.6, 3))
    log.write_text("no progress yet\n")
    assert _last_progress(log) is None


@pytest.mark.parametrize(
    "text, seconds",
    [("1-02:03:04", 93784.0), ("02:03:04", 7384.0), ("1:05", 65.0), ("UNLIMITED", None),
     ("INVALID", None)],
)
def test_slurm_time_left_is_parsed_from_squeue(text, seconds):
    from sam2tune.runner.scheduler import _parse_left

    assert _parse_left(text) == seconds


def test_outside_slurm_the_run_keeps_its_own_time_limit(monkeypatch):
    from sam2tune.config.schema import RunConfig
    from sam2tune.runner.launcher import _time_limit
    from sam2tune.runner.scheduler import job_label, slurm_job

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    cfg = RunConfig()
    limit, why = _time_limit(cfg)
    assert limit == cfg.limits.timeout_s and "limits.timeout_s" in why
    assert slurm_job() is None and job_label(None) is None
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert job_label(slurm_job()) == "slurm:40_1"

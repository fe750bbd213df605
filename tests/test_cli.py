"""The command line as a user sees it: bad input gives one clear line, exit 2, nothing written."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import sam2tune_cmd, small_run_cmd
from PIL import Image

import sam2tune


def _run(args, cache_root, results):
    # a key given twice is refused: the case's own value replaces the small run's
    keys = {a.split("=", 1)[0] for a in args}
    cmd = [a for a in small_run_cmd(cache_root, results) if a.split("=", 1)[0] not in keys]
    return subprocess.run(cmd + args, capture_output=True, text=True, timeout=300)


def _jpegs(d, n=3, h=64, w=64, ann_hw=None):
    (d / "JPEGImages").mkdir(parents=True)
    (d / "Annotations").mkdir()
    for t in range(n):
        Image.fromarray(np.full((h, w, 3), 30 * t, np.uint8)).save(
            d / "JPEGImages" / f"{t:05d}.jpg"
        )
        lab = np.zeros(ann_hw or (h, w), np.uint8)
        lab[10:30, 10:30] = 5
        Image.fromarray(lab, mode="P").save(d / "Annotations" / f"{t:05d}.png")
    return d / "JPEGImages", d / "Annotations"


def _case(name, tmp_path):
    if name == "unknown model":
        return ["model=sam3_huge"], "model: unknown model"
    if name == "missing video":
        return ["video=jpeg_dir", f"video.path={tmp_path}/nope"], "video.path: no such directory"
    if name == "empty video":
        (tmp_path / "empty").mkdir()
        return ["video=jpeg_dir", f"video.path={tmp_path}/empty"], "video.path: no JPEG frames"
    if name == "corrupt video":
        jpg, ann = _jpegs(tmp_path / "v")
        (jpg / "00001.jpg").write_bytes(b"garbage")
        return ["video=jpeg_dir", f"video.path={jpg}"], "video.path: corrupt frame"
    if name == "corrupt mp4":
        (tmp_path / "x.mp4").write_bytes(b"\0" * 64)
        return ["video=mp4", f"video.path={tmp_path}/x.mp4"], "video.path: cannot decode"
    if name == "annotation size":
        jpg, ann = _jpegs(tmp_path / "v", ann_hw=(32, 48))
        return [
            "video=jpeg_dir",
            f"video.path={jpg}",
            f"video.annotations={ann}",
        ], "video.annotations: mask"
    if name == "zero frames":
        return ["video.num_frames=0"], "video.num_frames: must be positive"
    if name == "negative objects":
        return ["video.num_objects=-1"], "video.num_objects: must be 1..256"
    if name == "image size":
        return ["model.image_size=100"], "model.image_size: must be a positive multiple of 16"
    if name == "budget lots":
        return ["limits.host_memory_budget=lots"], "limits.host_memory_budget: cannot parse"
    if name == "budget negative":
        return ["limits.device_memory_budget=-5GB"], "limits.device_memory_budget"
    if name == "unwritable results":
        (tmp_path / "afile").write_text("x")
        return ["results_dir=" + str(tmp_path / "afile" / "sub")], "is a file, not a folder"
    if name == "missing checkpoint":
        return [f"model.checkpoint={tmp_path}/none.pt"], "model.checkpoint: no such file"
    if name == "mismatched checkpoint":
        torch.save({"model": {"foo": torch.zeros(2)}}, tmp_path / "bad.pt")
        return [f"model.checkpoint={tmp_path}/bad.pt"], "model.checkpoint: bad.pt does not match"
    raise AssertionError(name)


CASES = [
    "unknown model",
    "missing video",
    "empty video",
    "corrupt video",
    "corrupt mp4",
    "annotation size",
    "zero frames",
    "negative objects",
    "image size",
    "budget lots",
    "budget negative",
    "unwritable results",
    "missing checkpoint",
    "mismatched checkpoint",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_bad_input_one_line_nonzero_nothing_written(name, tmp_path, cache_root):
    args, needle = _case(name, tmp_path)
    results = tmp_path / "results"
    p = _run(args, cache_root, results)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("sam2tune: error: ") and needle in lines[-1], p.stderr
    assert "Traceback" not in p.stderr
    assert not (results / "runs").exists() or not any((results / "runs").iterdir())
    assert not results.exists() or len(sam2tune.load_results(results)) == 0


@pytest.mark.slow
def test_python_dash_m_runs_the_same(tmp_path, cache_root):
    cmd = small_run_cmd(cache_root, tmp_path, [sys.executable, "-m", "sam2tune"])
    cmd.append("video.num_objects=1")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "status=ok" in p.stdout and "weights=random-init" in p.stdout
    assert "MiB" in p.stdout and "[estimated]" in p.stdout and "[measured]" in p.stdout
    assert len(sam2tune.load_results(tmp_path)) == 1


def test_unknown_command_and_help():
    p = subprocess.run(sam2tune_cmd() + ["frobnicate"], capture_output=True, text=True)
    assert p.returncode == 2 and "unknown command" in p.stderr
    p = subprocess.run(sam2tune_cmd() + ["--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "sam2tune run" in p.stdout


def test_download_without_network_fails_clearly(tmp_path):
    from sam2tune.adapter.checkpoints import DownloadError, download
    from sam2tune.config.schema import ModelConfig

    m = ModelConfig(checkpoint_url="http://127.0.0.1:9/sam2.1_hiera_tiny.pt")
    with pytest.raises(DownloadError, match="cannot download .* model.checkpoint=PATH"):
        download(m, tmp_path, timeout_s=5)
    assert not list((tmp_path / "checkpoints").iterdir())  # no partial file left


def test_load_results_names_every_invalid_record_and_refuses_a_missing_dir(tmp_path):
    import warnings

    import pytest

    from sam2tune.results import InvalidRecordError, InvalidRecordWarning

    with pytest.raises(FileNotFoundError, match="does not exist"):
        sam2tune.load_results(tmp_path / "nowhere")
    runs = tmp_path / "runs"
    good = {"row": {"run_id": "a", "config_hash": "h", "status": "ok"}}
    cases = {
        "a": json.dumps(good),
        "b": "",  # empty
        "c": "{}",  # no row
        "d": json.dumps(good)[:20],  # truncated
        "e": json.dumps({"row": {"status": "ok"}}),  # only a status
    }
    for rid, text in cases.items():
        (runs / rid).mkdir(parents=True)
        (runs / rid / "report.json").write_text(text)
    (runs / "f").mkdir()
    (runs / "f" / "config.json").write_text("{}")  # a run whose report never came
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        df = sam2tune.load_results(tmp_path)
    assert list(df["run_id"]) == ["a"]
    named = {str(x.message).split(":")[0] for x in w if x.category is InvalidRecordWarning}
    assert named == {str(runs / r / "report.json") for r in "bcdef"}
    assert len(df.attrs["invalid_records"]) == 5
    with pytest.raises(InvalidRecordError):
        sam2tune.load_results(tmp_path, strict=True)


def test_records_are_written_with_ordinary_permissions_and_summary_counts_oom(tmp_path):
    import os
    from collections import Counter

    from sam2tune.paths import atomic_write_text
    from sam2tune.sweep import sweep_summary

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(mask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
    s = sweep_summary(Counter(ok=2, oom=1, timeout=1))
    assert "(failed=2)" in s


@pytest.mark.parametrize("prefix", ["", "+", "++"])
def test_a_typo_in_a_key_is_refused_in_one_line_with_the_closest_key(prefix, tmp_path):
    p = subprocess.run(
        sam2tune_cmd() + ["run", f"{prefix}knobs.offload_vidoe_to_cpu=true", f"results_dir={tmp_path}"],
        capture_output=True,
        text=True,
    )
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr
    assert "did you mean knobs.offload_video_to_cpu?" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_every_sweep_point_is_validated_before_the_first_runs(tmp_path):
    p = subprocess.run(
        sam2tune_cmd() + ["run", "-m", "video.num_frames=4,0", f"results_dir={tmp_path / 'r'}"],
        capture_output=True,
        text=True,
    )
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "sweep point 2/2" in lines[-1] and "video.num_frames: must be positive" in lines[-1]
    assert not (tmp_path / "r" / "runs").exists()


def _child_of(pid: int, timeout: float = 60.0) -> int | None:
    import time

    import psutil

    end = time.time() + timeout
    while time.time() < end:
        kids = [c for c in psutil.Process(pid).children(recursive=True) if "runner.child" in " ".join(c.cmdline())]
        if kids:
            return kids[0].pid
        time.sleep(0.3)
    return None


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_the_run_process_dies_with_its_parent_and_leaves_nothing(sig, tmp_path, cache_root):
    import signal
    import time

    import psutil

    res = tmp_path / "r"
    cmd = sam2tune_cmd() + [
        "run", "-m", "video.num_frames=60,61", "video.height=64", "video.width=64",
        "probe.reference=false", "device=cpu", f"cache_dir={cache_root}", f"results_dir={res}",
    ]
    # as from a terminal: SIGINT at its default even where pytest itself was started with it
    # ignored (a background job of a non-interactive shell), which Python would keep
    p = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    child = _child_of(p.pid)
    assert child is not None, "no run process appeared"
    time.sleep(1.0)
    p.send_signal(getattr(signal, sig))
    _, err = p.communicate(timeout=60)
    time.sleep(1.0)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
    assert "Traceback" not in err and p.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert not [f for f in (res / ".tmp").rglob("*") if f.is_file()] if (res / ".tmp").exists() else True


COMMANDS = ["run", "study", "report", "predict", "calibrate", "fit", "tune", "recommend",
            "lookup", "download"]


@pytest.mark.slow
def test_top_level_help_lists_every_command_and_each_answers_help():
    p = subprocess.run(sam2tune_cmd() + ["--help"], capture_output=True, text=True)
    listed = {ln.split()[0] for ln in p.stdout.splitlines() if ln.startswith("  ") and ln.split()}
    assert set(COMMANDS) <= listed
    for cmd in COMMANDS[2:]:  # run's --help is Hydra's own
        q = subprocess.run(sam2tune_cmd() + [cmd, "--help"], capture_output=True, text=True)
        assert q.returncode == 0 and "Traceback" not in q.stderr, (cmd, q.stderr)
        assert f"sam2tune {cmd}" in q.stdout
    for cmd, arg in (("predict", "budget="), ("tune", "n_trials="), ("recommend", "gpu="),
                     ("lookup", "out="), ("fit", "validation_dir="), ("calibrate", "design=")):
        q = subprocess.run(sam2tune_cmd() + [cmd, "--help"], capture_output=True, text=True)
        assert arg in q.stdout, (cmd, q.stdout)


def test_help_piped_into_head_ends_quietly():
    p = subprocess.run(
        f"{' '.join(sam2tune_cmd())} --help | head -1", shell=True, capture_output=True, text=True
    )
    assert p.returncode == 0 and "Traceback" not in p.stderr and p.stdout.startswith("usage")

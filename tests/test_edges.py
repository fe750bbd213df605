"""Nothing surprises, second pass: each class of edge cases tried with several members. Every
refusal is one line ``sam2tune: error: <input>: ...`` naming the input, exit 2, no traceback and
nothing written; records are never lost and every count is what it says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import SMALL_RUN, sam2tune_cmd
from PIL import Image

import sam2tune
from sam2tune.results import NotAResultsDir, StaleRunWarning, load_results
from sam2tune.stale import OWNER_FILE, claim, remove_stale, stale_runs

W = ["workload.model=sam2.1_tiny", "workload.num_frames=30"]


def _cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        sam2tune_cmd() + args, capture_output=True, text=True, cwd=cwd, env=e, timeout=timeout
    )


def _refused(r, key: str) -> None:
    """One line on stderr naming ``key``, exit 2, no traceback anywhere."""
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2, (r.returncode, r.stdout[-300:], r.stderr[-500:])
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("sam2tune: error: ") and key in lines[0], lines[0]
    assert "Traceback" not in r.stdout + r.stderr


def _empty(d: Path) -> bool:
    return not d.exists() or not any(d.iterdir())


def _jpegs(d: Path, n: int = 4, h: int = 48, w: int = 64) -> Path:
    d.mkdir(parents=True)
    for t in range(n):
        Image.fromarray(np.full((h, w, 3), 20 * t, np.uint8)).save(d / f"{t:05d}.jpg")
    return d


STORAGES = [
    ("sqlite:////nonexistent/dir/x.db", "does not exist"),
    ("postgresql://nohost/x", "not installed"),  # psycopg 3 is not in the install
    ("postgresql+psycopg2://postgres@nohost/x", "cannot connect"),
    ("bogus://x", "unknown database kind"),
    ("notaurl", "not a database URL"),
]


@pytest.mark.slow
def test_engines_storage_and_launcher_fail_in_one_line_before_anything(tmp_path):
    for i, (url, what) in enumerate(STORAGES):
        out = tmp_path / f"o{i}"
        r = _cli(["tune", "budget=8GiB", "n_trials=3", f"storage={url}", *W,
                  f"results_dir={out}"], tmp_path)
        _refused(r, "storage")
        assert what in r.stderr, r.stderr
        assert _empty(out)
    sweep = ["video.num_frames=4,5", "model.image_size=256", "device=cpu"]
    no_slurm = {"SLURM_CONF": str(tmp_path / "no-slurm.conf")}
    for j, (launcher, env) in enumerate([
        (["hydra/launcher=slurm", "hydra.launcher.partition=local"], no_slurm),
        (["hydra/launcher=local_workers", "hydra.launcher.n_jobs=0"], None),
        (["hydra/launcher=local_workers", "hydra.launcher.n_jobs=-3"], None),
    ]):
        out = tmp_path / f"l{j}"
        r = _cli(["run", "-m", *launcher, *sweep, f"results_dir={out}"], tmp_path, env)
        _refused(r, "launcher")
        assert _empty(out) and not list(tmp_path.glob("**/.submitit"))


NUMBERS = [
    (["predict", "device_kind=cpu", "budget=0.5"], "budget", "whole number"),
    (["predict", "device_kind=cpu", "host_budget=1.5"], "host_budget", "whole number"),
    (["predict", "budget=nan"], "budget", "finite"),
    (["run", "limits.host_memory_budget=0.5"], "limits.host_memory_budget", "whole number"),
    (["run", "limits.timeout_s=nan"], "limits.timeout_s", "finite"),
    (["run", "limits.timeout_s=inf"], "limits.timeout_s", "finite"),
    (["predict", "knobs.strategy=stream", "knobs.stream_prefetch=1000000"],
     "knobs.stream_prefetch", "0..64"),
    (["predict", "workload.video_height=0"], "workload.video_height", "positive"),
    (["predict", "workload.video_width=-5"], "workload.video_width", "positive"),
    (["run", "video.num_frames=1000000000"], "video.num_frames", "at most 18000"),
    (["tune", "budget=8GiB", "confirm_frames=-1"], "confirm_frames", ">= 1"),
    # a bare number is bytes: a budget under 1 MiB is a lost unit, not a budget
    (["predict", "host_budget=32"], "host_budget", "did you mean 32GiB?"),
    (["recommend", "budget=24"], "budget", "did you mean 24GiB?"),
    (["run", "limits.host_memory_budget=8"], "limits.host_memory_budget", "less than 1 MiB"),
    # absurdly large: no figure answers them
    (["predict", "workload.num_frames=100000000000000000000000"], "workload.num_frames",
     "at most 10,000,000"),
    (["predict", "budget=1000000000000000000000000TiB"], "budget", "at most 1 EiB"),
]

KEYS = [
    # a typo inside workload.* gets the closest field, as a top-level typo does
    (["predict", "workload.num_object=3"], "workload.num_object",
     "did you mean workload.num_objects?"),
    (["recommend", "budget=24GiB", "workload.imge_size=512"], "workload.imge_size",
     "did you mean workload.image_size?"),
    # two descriptions of the workload: the run key would be ignored, so it is refused
    (["predict", "workload.num_objects=3", "video.num_objects=5"], "video.num_objects",
     "say workload.num_objects=... instead"),
    (["predict", "workload.model=sam2.1_tiny", "model=sam2.1_large"], "model",
     "say workload.model=... instead"),
    (["predict", "workload.num_frames=90", "video=mp4"], "video", "would be ignored"),
    # a run key in recommend's grammar gets the workload.* key that says it
    (["recommend", "budget=24GiB", "model=sam2.1_tiny"], "model", "did you mean workload.model?"),
    (["recommend", "budget=24GiB", "video.num_frames=900"], "video.num_frames",
     "did you mean workload.num_frames?"),
    (["predict", "frmat=json"], "frmat", "did you mean format?"),
    # an empty value (`budget=$BUDGET`, the variable unset) is not "not given"
    (["predict", "budget="], "budget", "empty value"),
    (["recommend", "gpu=", *W], "gpu", "empty value"),
    (["run", "results_dir=", "video.num_frames=3"], "results_dir", "empty path"),
    # a lookup table named but not there
    (["recommend", "gpu=RTX 4090", "lookup=/nonexistent/gpu_lookup.json", *W], "lookup",
     "no such file"),
    (["recommend", "gpu=H100", *W], "gpu", "did you mean 'H100 80GB' or 'H100 NVL'?"),
    # the lookup is a fixed grid: an argument picking one cell is refused, not ignored
    (["lookup", "gpu=H100"], "gpu", "the table has every catalog GPU"),
    (["lookup", "workload.num_objects=3"], "workload.num_objects", "the table's grid sets it"),
    (["recommend", "gpu=NVIDIA A100-SXM4-80GB", *W], "gpu", "did you mean 'A100 80GB'?"),
]


def test_unknown_and_conflicting_keys_are_refused_naming_the_key(tmp_path):
    afile = tmp_path / "runs.txt"  # results_dir given a file: nothing to read runs from
    afile.write_text("x")
    for args, key, what in [
        *KEYS,
        (["recommend", "budget=8GiB", f"results_dir={afile}"], "results_dir", "is a file"),
        (["lookup", f"results_dir={afile}", f"out={tmp_path / 'lk'}"], "results_dir",
         "is a file"),
    ]:
        r = _cli(args, tmp_path)
        _refused(r, key)
        assert what in r.stderr, (args, r.stderr)
    assert [p.name for p in tmp_path.iterdir()] == ["runs.txt"]  # nothing written in the cwd


def test_numbers_at_their_edges_are_refused_naming_the_field(tmp_path):
    for args, key, what in NUMBERS:
        out = tmp_path / "out"
        r = _cli([*args, f"results_dir={out}"] if args[0] in ("run", "tune") else args,
                 tmp_path)
        _refused(r, key)
        assert what in r.stderr, r.stderr
        assert _empty(out)


def test_a_frame_count_beyond_the_video_is_refused(tmp_path):
    frames = _jpegs(tmp_path / "v", n=4)
    for cmd in (["predict"], ["run", f"results_dir={tmp_path / 'out'}"]):
        r = _cli([*cmd, "video=jpeg_dir", f"video.path={frames}", "video.num_frames=1000"],
                 tmp_path)
        _refused(r, "video.num_frames")
        assert "has 4 frames" in r.stderr
    assert _empty(tmp_path / "out")


@pytest.mark.slow
def test_files_results_dir_study_name_quoting_and_bad_videos_write_nothing(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args in (
        ["run", f"results_dir={afile}", *SMALL_RUN],
        ["run", "-m", f"results_dir={afile}", "video.num_frames=3,4", *SMALL_RUN[:1]],
        ["run", f"results_dir={afile}/sub", *SMALL_RUN],
        ["tune", "budget=8GiB", "n_trials=2", *W, f"results_dir={afile}"],
    ):
        _refused(_cli(args, tmp_path), "results_dir")
    for name in ("../../escape", "a/b", "..", "/abs"):
        out = tmp_path / "t"
        _refused(_cli(["tune", "budget=8GiB", "n_trials=2", f"study_name={name}", *W,
                       f"results_dir={out}"], tmp_path), "study_name")
        assert _empty(out)
    assert not list(tmp_path.parent.glob("escape*"))
    (tmp_path / "vid é").mkdir()
    r = _cli(["run", "video=jpeg_dir", f"video.path={tmp_path}/vid é"], tmp_path)
    _refused(r, "video.path")
    assert "needs quotes" in r.stderr and '"' in r.stderr
    out = tmp_path / "bad-video"
    for video in (["video=jpeg_dir", f"video.path={tmp_path}/nope"],
                  ["video=mp4", f"video.path={tmp_path}/nope.mp4"]):
        _refused(_cli(["run", *video, f"results_dir={out}"], tmp_path), "video.path")
        assert not out.exists()


def test_load_results_refuses_the_parts_of_a_results_dir(tmp_path):
    root = tmp_path / "results"
    run = root / "runs" / "20260101-000000-abcdef01"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "report.json").mkdir()  # a report that is a folder
    df = load_results(root)
    assert [r["reason"] for r in df.attrs["invalid_records"]] == ["a folder, not a file"]
    for part, what in ((root / "runs", "runs/ folder"), (run, "one run's folder")):
        with pytest.raises(NotAResultsDir, match=what):
            load_results(part)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "runs").write_text("not a folder")
    with pytest.raises(NotAResultsDir, match="is a file"):
        load_results(odd)


def test_stale_run_folders_are_reported_and_only_dead_ones_removed(tmp_path):
    root = tmp_path / "results"
    dead = root / ".tmp" / "20260101-000000-dead0001"
    live = root / ".tmp" / "20260101-000000-live0001"
    for d in (dead, live):
        d.mkdir(parents=True)
    claim(live)  # this process: alive
    # a process that has exited: its pid is gone (an independent oracle: a real dead process)
    p = subprocess.Popen([sys.executable, "-c", "import os; print(os.getpid())"],
                         stdout=subprocess.PIPE, text=True)
    pid = int(p.communicate()[0])
    owner = json.loads((live / OWNER_FILE).read_text()) | {"pid": pid}
    (dead / OWNER_FILE).write_text(json.dumps(owner))
    assert stale_runs(root) == [dead]
    with pytest.warns(StaleRunWarning, match="1 in-flight run folder"):
        df = load_results(root)
    assert df.attrs["stale_runs"] == [str(dead)]
    assert remove_stale(root) == [dead]
    assert not dead.exists() and live.exists()


MESSAGES = [
    (["tune", "budget=8GiB", "n_trials=abc", *W], "n_trials"),
    (["calibrate", "seed=abc"], "seed"),
    (["run", "-m", "video.num_frames="], "video.num_frames"),
    (["run", "-m", "video.num_frames=[]"], "video.num_frames"),
    (["run", "video.num_frames=4", "video.num_frames=5"], "video.num_frames"),
    (["tune", "budget=8GiB", "budget=9GiB", *W], "budget"),
    (["recommend", "gpu=NOT_A_GPU", "budget=8GiB", *W], "gpu"),
    (["recommend", "gpu=NOT_A_GPU", *W], "gpu"),
    (["recommend", "impl=transformers", "workload.model=sam2_large", "gpu=RTX 4090"], "impl"),
    (["recommend", "impl=transformers", "workload.model=sam2_tiny", "gpu=RTX 4090"], "impl"),
    (["report", "results_dir=x", "titel=y"], "titel"),
    (["study", "demo", "video.bogus=1"], "video.bogus"),
    (["download", "sam3_huge"], "sam3_huge"),
]


@pytest.mark.slow
def test_messages_name_the_key(tmp_path):
    for args, key in MESSAGES:
        _refused(_cli([*args, f"results_dir={tmp_path / 'o'}"] if args[0] not in
                      ("report", "download") else args, tmp_path), key)
    bad = tmp_path / "bad.json"
    bad.write_text("{bad")
    _refused(_cli(["recommend", "gpu=RTX 4090", f"lookup={bad}", *W], tmp_path), "lookup")
    assert _empty(tmp_path / "o")


def test_a_failed_single_run_exits_with_its_status_code(tmp_path, cache_root):
    from sam2tune.cli import RUN_EXIT_CODES

    r = _cli(["run", *SMALL_RUN, "limits.timeout_s=0.5", f"cache_dir={cache_root}",
              f"results_dir={tmp_path}"], tmp_path)
    assert r.returncode == RUN_EXIT_CODES["timeout"] == 4, r.stderr[-400:]
    assert "status=timeout" in r.stdout
    (row,) = load_results(tmp_path).to_dict("records")
    assert row["status"] == "timeout"  # recorded all the same


def test_a_crash_at_the_host_budget_is_oom_elsewhere_crashed():
    from sam2tune.config.schema import LimitsConfig, RunConfig
    from sam2tune.runner.launcher import _at_host_budget, _Ended, _Exit

    def verdict(budget, data_peak, status="crashed"):
        cfg = RunConfig(limits=LimitsConfig(host_memory_budget=budget))
        ended = _Ended(status, "run process killed by SIGSEGV", {}, {}, None)
        _at_host_budget(cfg, _Exit(None, None, -11, data_peak), ended)
        return ended

    gib = 2**30
    at = verdict("1GiB", int(0.95 * gib))
    assert at.status == "oom" and "data segment reached" in at.error
    assert verdict("1GiB", int(0.95 * gib), status="error").status == "oom"  # OSError at limit
    assert verdict("1GiB", int(0.3 * gib)).status == "crashed"  # far from it: a real crash
    assert verdict(None, 10 * gib).status == "crashed"  # no budget: a SIGSEGV stays crashed


def _tune(results: Path, n: int, name: str) -> list[str]:
    return sam2tune_cmd() + ["tune", "budget=8GiB", f"n_trials={n}", f"study_name={name}",
                             "host_budget=16GiB", *W, f"results_dir={results}"]


def _complete(results: Path, name: str) -> int:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(results / "tune" / "optuna_journal.log")))
    study = optuna.load_study(study_name=name, storage=storage)
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_the_trial_cap_holds_exactly_across_workers(tmp_path):
    n = 40
    procs = [subprocess.Popen(_tune(tmp_path, n, "shared"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    assert _complete(tmp_path, "shared") == n


def test_stopping_tune_prints_what_was_recorded_not_a_traceback(tmp_path):
    p = subprocess.Popen(_tune(tmp_path, 100000, "long"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    journal = tmp_path / "tune" / "optuna_journal.log"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120 and (
        not journal.exists() or len(journal.read_text().splitlines()) < 30
    ):
        time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-500:]
    assert "Traceback" not in out + err, err[-800:]
    assert "interrupted: study long holds" in err and "resumes" in err
    held = int(err.split("holds ")[1].split()[0])
    assert held == _complete(tmp_path, "long") >= 1


def test_the_api_refuses_prompts_by_index_and_field(tmp_path):
    frames = _jpegs(tmp_path / "v", n=4, h=96, w=128)
    cases = [
        ([dict(frame_idx=-1, obj_id=1, box=[10, 10, 50, 50])], "prompts[0].frame_idx"),
        ([dict(frame_idx=9, obj_id=1, box=[10, 10, 50, 50])], "prompts[0].frame_idx"),
        ([dict(frame_idx=0, obj_id=1, box=[50, 50, 10, 10])], "prompts[0].box"),
        ([dict(frame_idx=0, obj_id="abc", box=[10, 10, 50, 50])], "prompts[0].obj_id"),
        ([dict(frame_idx=0, obj_id=1, points=[[1, 2, 3]], labels=[1])], "prompts[0].points"),
        ([dict(frame_idx=0, obj_id=1, points=[[10, 10]], labels=[7])], "prompts[0].labels"),
        ([dict(frame_idx=0, obj_id=1, mask=np.ones((10, 10)))], "prompts[0].mask"),
    ]
    pred = sam2tune.build_predictor("sam2.1_tiny", None, "cpu", image_size=256)
    for prompts, field in cases:
        with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
            sam2tune.propagate(pred, str(frames), prompts)
    with pytest.raises(ValueError, match="prefetch"):
        sam2tune.propagate(pred, str(frames), [dict(frame_idx=0, obj_id=1, box=[10, 10, 50, 50])],
                           strategy="stream", prefetch=10**7)
    with pytest.raises(ValueError, match="predictor"):
        sam2tune.propagate(None, str(frames), [dict(frame_idx=0, obj_id=1, box=[1, 1, 9, 9])])


@pytest.mark.slow
def test_two_sweeps_into_one_dir_each_count_their_own_points(tmp_path, cache_root):
    base = [a for a in SMALL_RUN if not a.startswith("video.num_frames=")]
    sweep = ["run", "-m", *base, "video.num_frames=3,4", f"cache_dir={cache_root}",
             f"results_dir={tmp_path}", "force=true"]
    summaries = []
    for _ in range(2):
        r = _cli(sweep, tmp_path)
        assert r.returncode == 0, r.stderr[-500:]
        summaries.append([x for x in r.stderr.splitlines() if "summary" in x or "holds" in x])
    first, second = summaries
    assert "sweep summary: 2 points: ok=2" in first[0]
    assert "sweep summary: 2 points: ok=2" in second[0]  # its own two, not the dir's four
    assert "results dir holds 4 runs in all: ok=4" in second[1]
    assert len(load_results(tmp_path)) == 4


@pytest.mark.slow
def test_a_report_of_only_failed_runs_is_plain_and_quiet(tmp_path, cache_root):
    from PIL import Image as PILImage

    for n in (3, 4):  # two runs that time out: recorded, nothing ok
        r = _cli(["run", *[a for a in SMALL_RUN if not a.startswith("video.num_frames")],
                  f"video.num_frames={n}", "limits.timeout_s=0.5", f"cache_dir={cache_root}",
                  f"results_dir={tmp_path}"], tmp_path)
        assert r.returncode == 4
    r = _cli(["report", f"results_dir={tmp_path}", f"out={tmp_path / 'rep'}"], tmp_path)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    sizes = [PILImage.open(p).size for p in (tmp_path / "rep" / "figures").glob("*.png")]
    assert sizes and max(max(s) for s in sizes) < 1200, sizes  # no canvas blown up by a label


def test_a_processs_peak_rss_is_its_own_not_its_parents():
    """Linux carries a parent's RSS high-water mark into a child's ru_maxrss across fork + exec:
    a run started from a large process (a notebook, this test session) must still record its
    own peak. The oracle: the parent holds 1.5 GiB more than a bare import of sam2tune.probes."""
    hold = np.ones(1536 * 2**20 // 8)  # touched: resident in this (the parent) process
    code = "from sam2tune.probes import peak_rss_bytes; print(peak_rss_bytes())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert hold.sum() > 0 and int(out.stdout) < 1024 * 2**20, int(out.stdout)


def test_a_device_this_machine_lacks_is_refused_before_anything_is_written(tmp_path):
    import torch

    bad = ["device=cuda:99"] if torch.cuda.is_available() else ["device=cuda", "device=cuda:1"]
    for j, dev in enumerate(bad):
        out = tmp_path / f"out{j}"
        r = _cli(["run", dev, "video.num_frames=3", f"results_dir={out}"], tmp_path)
        _refused(r, "device")
        assert not out.exists(), list(out.rglob("*"))  # not even an empty .tmp


def test_a_gpu_name_short_of_the_catalogs_gets_the_names_it_is_part_of(tmp_path):
    for gpu, names in (("H100", "'H100 80GB' or 'H100 NVL'"), ("4090", "'RTX 4090'")):
        r = _cli(["recommend", f"gpu={gpu}", *W], tmp_path)
        _refused(r, "gpu")
        assert f"did you mean {names}?" in r.stderr, r.stderr
    # as nvidia-smi and torch.cuda.get_device_name spell them: the catalog's GPU
    for gpu, name in (("NVIDIA GeForce RTX 4090", "RTX 4090"), ("Tesla T4", "T4")):
        r = _cli(["recommend", f"gpu={gpu}", *W], tmp_path)
        assert r.returncode == 0, r.stderr
        assert f"sam2tune recommendation for {name} (" in r.stdout

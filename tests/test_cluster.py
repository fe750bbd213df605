"""Scale-out on the real engines: a one-node Slurm cluster (munge, slurmctld, slurmd) and a
PostgreSQL server, started by ``scripts/local-cluster`` on this machine and stopped at the end.

Marked ``cluster``: they need root and Debian's slurm-wlm, munge and postgresql, which
``scripts/install`` provides; they skip, saying why, only where those cannot be there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from sam2tune.results import load_results

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "local-cluster"
SAM2TUNE = [sys.executable, "-m", "sam2tune"]


def _needs(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (munge, slurmd and the postgres user); scripts/install as root")
    missing = [t for t in tools if not (shutil.which(t) or list(Path("/usr/lib").glob(t)))]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/install adds them with apt-get)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    _needs("slurmctld", "slurmd", "munged", "sbatch")
    d = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, SLURMCTLD_PORT=str(_free_port()), SLURMD_PORT=str(_free_port()))
    out = subprocess.run(
        [str(SCRIPT), "slurm", "start", str(d)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr + out.stdout
    yield dict(os.environ, SLURM_CONF=str(d / "slurm.conf"))
    subprocess.run([str(SCRIPT), "slurm", "stop", str(d)], capture_output=True)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    _needs("postgresql/*/bin/initdb")
    pytest.importorskip("psycopg2", reason="pip install -e '.[postgres]' (scripts/install does)")
    # the server runs as the postgres user: its folder must be reachable by it (pytest's tmp
    # folders are root's alone)
    d = Path(tempfile.mkdtemp(prefix="sam2tune-postgres-", dir="/tmp"))
    d.chmod(0o755)
    out = subprocess.run(
        [str(SCRIPT), "postgres", "start", str(d)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr + out.stdout
    yield out.stdout.strip().splitlines()[-1]
    subprocess.run([str(SCRIPT), "postgres", "stop", str(d)], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


SLURM_LAUNCHER = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",  # CPU-only cluster
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.partition=local",
    "hydra.launcher.timeout_min=2",
]
POINT = ["model.image_size=256", "probe.reference=false", "video.num_objects=1"]


@pytest.mark.slow
def test_a_slurm_sweep_records_every_point_a_time_limit_and_resumes(slurm, tmp_path):
    res = tmp_path / "res"
    t0 = time.monotonic()
    out = subprocess.run(
        [*SAM2TUNE, "run", "-m", *SLURM_LAUNCHER, *POINT, "video.num_frames=4,6,2000",
         f"results_dir={res}"],
        env=slurm, capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    wall = time.monotonic() - t0
    said = out.stdout + out.stderr
    assert "sweep summary: 3 points: ok=2" in said, said[-4000:]
    df = load_results(res, strict=True)
    assert len(df) == 3 and df["run_id"].is_unique and df["config_hash"].is_unique
    by_len = {int(r.num_frames): r for r in df.itertuples()}
    jobs = set()
    for n in (4, 6):
        r = by_len[n]
        assert r.status == "ok" and r.weights == "random-init"
        assert r.est_device_peak_bytes > 0 and r.fps > 0 and r.peak_host_rss_bytes > 0
        assert r.scheduler_job.startswith("slurm:")
        jobs.add(r.scheduler_job)
        rep = json.loads((res / "runs" / r.run_id / "report.json").read_text())
        assert rep["scheduler"]["scheduler"] == "slurm" and rep["scheduler"]["job_id"]
    # 2,000 frames cannot finish in the job's 2 minutes: stopped before Slurm kills the job
    slow = by_len[2000]
    assert slow.status == "timeout", slow.error
    assert f"time limit of Slurm job {slow.scheduler_job}" in slow.error
    jobs.add(slow.scheduler_job)
    assert len(jobs) == 3  # one Slurm job (array task) per point
    print(f"slurm sweep: 3 points, {len(df)} rows, wall {wall:.0f} s")

    # resume: the finished points are skipped, nothing is recorded twice
    again = subprocess.run(
        [*SAM2TUNE, "run", "-m", *SLURM_LAUNCHER, *POINT, "video.num_frames=4,6",
         f"results_dir={res}"],
        env=slurm, capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    said = again.stdout + again.stderr
    assert "2 points: ok=0  skipped=2" in said, said[-4000:]
    assert len(load_results(res, strict=True)) == 3


def _tune(storage: str | None, results: Path, study: str, n_trials: int) -> subprocess.Popen:
    args = [*SAM2TUNE, "tune", "budget=8GiB", f"n_trials={n_trials}", f"study_name={study}",
            f"results_dir={results}"]
    if storage:
        args.append(f"storage={storage}")
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)


def _storage(kind: str, url: str | None, shared: Path):
    if kind == "postgresql":
        return url, url
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    # the embedded default: a journal file in results_dir, shared by both workers
    path = shared / "tune" / "optuna_journal.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return None, JournalStorage(JournalFileBackend(str(path)))


@pytest.fixture(params=["postgresql", "journal"])
def storage_kind(request):
    if request.param == "postgresql":
        return request.param, request.getfixturevalue("postgres")
    return request.param, None


def _complete(study: optuna.Study) -> dict[int, tuple]:
    return {
        t.number: (tuple(t.values), dict(t.params), t.user_attrs.get("worker"))
        for t in study.get_trials(deepcopy=False)
        if t.state == optuna.trial.TrialState.COMPLETE
    }


@pytest.mark.slow
def test_two_workers_share_one_study_and_a_killed_worker_loses_nothing(storage_kind, tmp_path):
    kind, url = storage_kind
    shared = tmp_path / "res"
    cli_storage, storage = _storage(kind, url, shared)
    study_name = f"shared-{kind}"
    n = 150
    t0 = time.monotonic()
    a = _tune(cli_storage, shared, study_name, n)
    b = _tune(cli_storage, shared, study_name, n)
    # wait until both workers have finished trials, then kill one mid-study
    deadline = time.monotonic() + 300
    seen: dict[int, tuple] = {}
    while time.monotonic() < deadline:
        try:
            seen = _complete(optuna.load_study(study_name=study_name, storage=storage))
        except KeyError:  # not created yet
            seen = {}
        if len(seen) >= 30 and len({w for *_, w in seen.values()}) == 2:
            break
        assert a.poll() is None and b.poll() is None, "a worker ended before the kill"
        time.sleep(0.2)
    else:
        pytest.fail(f"the workers did not both finish trials: {len(seen)} complete")
    os.kill(a.pid, signal.SIGKILL)
    killed = f"{socket.gethostname()}:{a.pid}"
    before = _complete(optuna.load_study(study_name=study_name, storage=storage))
    assert b.wait(timeout=300) == 0, b.stdout.read()[-3000:]
    a.wait()

    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))  # every trial stored once
    assert len({t._trial_id for t in trials}) == len(trials)
    done = _complete(study)
    for num, val in before.items():  # no finished trial lost (or changed) by the kill
        assert done[num] == val
    assert len(done) == n  # the study stopped at exactly n finished trials, across workers
    workers = {w for *_, w in done.values()}
    assert killed in workers and len(workers) == 2  # both workers' trials in the final table
    # besides trials started beyond the cap (pruned), the killed worker's unfinished trial (if
    # any) is the only one not complete
    pruned = optuna.trial.TrialState.PRUNED
    assert sum(t.state not in (optuna.trial.TrialState.COMPLETE, pruned) for t in trials) <= 1
    per = {w: sum(x == w for *_, x in done.values()) for w in workers}
    print(
        f"{kind}: {len(trials)} trials stored, {len(done)} complete, per worker "
        f"{sorted(per.values())}, killed after {len(before)}, wall {time.monotonic() - t0:.0f} s"
    )

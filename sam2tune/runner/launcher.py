"""Measure one run (a SAM 2 session) in a fresh process (``python -m sam2tune.runner.child``)
with a timeout, and record it.

The parent validates every input first (bad input: one-line error, nothing written), then starts
the child, waits at most ``limits.timeout_s``, turns whatever happened (result, OOM, crash,
timeout) into one row, and writes ``runs/<run_id>/config.json`` and ``report.json`` atomically.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sam2tune.adapter.build import predictor_target
from sam2tune.adapter.checkpoints import resolve_checkpoint, sha256_file
from sam2tune.config.process import run_process_env
from sam2tune.config.schema import RunConfig, config_hash, cuda_refusal
from sam2tune.errors import InputError
from sam2tune.paths import (
    atomic_write_json,
    cache_dir,
    check_results_dir,
    check_writable_dir,
    report_path,
)
from sam2tune.record import SWEEP_ID_ENV, make_row
from sam2tune.runner.report import RunReport
from sam2tune.runner.scheduler import (
    MARGIN_S,
    job_label,
    slurm_job,
    stop_event,
    time_left_s,
)
from sam2tune.scenario import make_prompts
from sam2tune.stale import OWNER_FILE, claim
from sam2tune.units import fmt_bytes
from sam2tune.video.sources import resolve_video

__all__ = ["RunOutcome", "run_isolated", "REPORT_SCHEMA"]

REPORT_SCHEMA = 1

@dataclass
class RunOutcome:
    """A recorded run: its row and its ``report.json``."""
    row: dict[str, Any]
    report_path: Path


def _version() -> str:
    from sam2tune import __version__

    return __version__


def new_run_id() -> str:
    """A unique run id: start time + a random suffix (sorts by time)."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]


def _last_progress(log_path: Path) -> tuple[int, int, float] | None:
    from sam2tune.runner.measure import PROGRESS_TAG

    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return None
    # the tag may follow another writer's text on the same line (SAM 2's tqdm bar ends in \r)
    found = re.findall(re.escape(PROGRESS_TAG) + r" (\d+) (\d+) ([\d.]+)\n", tail)
    if not found:
        return None
    done, total, secs = found[-1]
    return int(done), int(total), float(secs)


def _data_bytes(pid: int) -> int:
    """The process's data segment now (VmData: what RLIMIT_DATA limits), 0 when gone."""
    import psutil

    try:
        return int(psutil.Process(pid).memory_info().data)
    except (psutil.Error, AttributeError):
        return 0


def _wait_with_progress(
    proc: subprocess.Popen, timeout_s: float, log_path: Path, run_id: str,
    interval_s: float = 10.0, data_peak: list[int] | None = None,
) -> None:
    """Wait for the run process, showing frames done, fps and ETA on stderr (a line updated in
    place on a terminal, a line every 10 s otherwise). Raises ``subprocess.TimeoutExpired`` at
    the deadline or when the batch scheduler signals its time limit."""
    stop, _ = stop_event()
    tty = sys.stderr.isatty()
    deadline = time.monotonic() + timeout_s
    last_print, shown = 0.0, False
    while True:
        try:
            proc.wait(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline or stop.is_set():
                raise
        if data_peak is not None:  # evidence for a run that dies at its host budget
            data_peak[0] = max(data_peak[0], _data_bytes(proc.pid))
        p = _last_progress(log_path)
        now = time.monotonic()
        if p is None or (not tty and now - last_print < interval_s):
            continue
        done, total, secs = p
        fps = done / secs if secs > 0 else 0.0
        eta = (total - done) / fps if fps > 0 else float("nan")
        msg = f"run {run_id}: frame {done}/{total}, {fps:.2f} fps, ETA {eta:.0f} s"
        print(("\r" + msg) if tty else msg, end="" if tty else "\n", file=sys.stderr, flush=True)
        last_print, shown = now, True
    if shown and tty:
        print(file=sys.stderr)


_STOPPING = threading.Event()


def stop_runs() -> None:
    """Stop every run process of this process (runs started from worker threads, which Ctrl-C
    does not reach): they leave nothing, as an interrupted sequential run does."""
    import psutil

    _STOPPING.set()
    for child in psutil.Process().children(recursive=True):
        child.terminate()


@dataclass
class _Prepared:
    """A run's inputs, resolved and validated in the parent before any process starts."""

    cfg: RunConfig
    results: Path
    cache_root: Path
    weights: str
    video: Any
    prompts: list[Any]
    created: bool = False  #: results_dir did not exist before this run


def _discard(pre: _Prepared, tmp_dir: Path) -> None:
    """Remove what a run that never started wrote: its folder, an empty ``.tmp``, and the
    results folder itself when this run created it and it is still empty."""
    shutil.rmtree(tmp_dir, ignore_errors=True)
    for d in (tmp_dir.parent, pre.results) if pre.created else (tmp_dir.parent,):
        try:
            d.rmdir()  # only when empty
        except OSError:
            pass


def _prepare(cfg: RunConfig) -> _Prepared:
    predictor_target(cfg.knobs)  # validates knob combinations
    why = cuda_refusal(cfg.device)  # before anything is written
    if why is not None:
        raise InputError(f"device: {cfg.device}: {why}")
    if cfg.probe.memory_snapshot and not cfg.device.startswith("cuda"):
        import torch

        if cfg.device != "auto" or not torch.cuda.is_available():
            raise InputError(
                f"probe.memory_snapshot=true: needs a CUDA device (device={cfg.device}"
                + (", and no CUDA device here)" if cfg.device == "auto" else ")")
            )
    cache_root = cache_dir(cfg.cache_dir)
    results = Path(cfg.results_dir).expanduser()
    check_results_dir(results)  # nothing is created before the inputs are known good
    try:
        (cache_root / "videos").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cache_dir: cannot write to {str(cache_root)!r} ({e})") from None
    ckpt = resolve_checkpoint(cfg.model, cache_root)
    weights = "random-init" if ckpt is None else "sha256:" + sha256_file(ckpt, cache_root)
    video = resolve_video(cfg.video, cache_root)
    prompts = make_prompts(video, cfg.scenario, video.num_frames)
    created = not results.exists()
    check_writable_dir(results, "results_dir")
    return _Prepared(cfg, results, cache_root, weights, video, prompts, created)


def _time_limit(cfg: RunConfig) -> tuple[float, str]:
    """The run's time limit and what a timeout will say: ``limits.timeout_s``, or less where
    the Slurm job this runs in ends sooner (minus the margin to record the row)."""
    limit = float(cfg.limits.timeout_s)
    why = f"no result within limits.timeout_s={cfg.limits.timeout_s:g} s"
    left = time_left_s()
    if left is not None and left - MARGIN_S < limit:
        limit = max(1.0, left - MARGIN_S)
        why = (
            f"stopped {MARGIN_S:g} s before the time limit of Slurm job "
            f"{job_label(slurm_job())} ({left:.0f} s left when the run started)"
        )
    return limit, why


@dataclass
class _Exit:
    """How the run process ended: its message, why it timed out, its return code, and the
    largest data segment sampled while it ran (bytes)."""

    msg: dict[str, Any] | None
    timed_out: str | None
    code: int | None
    data_peak_bytes: int = 0


@dataclass
class _Ended:
    """A finished run's verdict: status, error, the child's report (None when it failed) and
    measures, traceback."""

    status: str
    error: str | None
    body: RunReport | None
    measures: dict[str, Any]
    traceback: str | None


def _launch(pre: _Prepared, tmp_dir: Path, run_id: str) -> _Exit:
    """Start the run process and wait for it."""
    cfg = pre.cfg
    limit, why = _time_limit(cfg)
    log_path = tmp_dir / "run.log"
    refs = str(pre.results / ".cache" / "refs")
    with open(tmp_dir / "input.pkl", "wb") as f:
        pickle.dump((cfg.to_dict(), pre.video, pre.prompts, refs, str(pre.cache_root)), f)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sam2tune.runner.child", str(tmp_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=run_process_env(),
        )
        timed_out: str | None = None
        stop, reason = stop_event()
        data_peak = [0]
        try:
            _wait_with_progress(proc, limit, log_path, run_id, data_peak=data_peak)
        except subprocess.TimeoutExpired:
            timed_out = why
            proc.kill()
            proc.wait()
        except BaseException:  # Ctrl-C / SIGTERM: the run dies with us and leaves nothing
            proc.kill()
            proc.wait()
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
    if stop.is_set():  # the scheduler is ending the job (its signal reached the run process too)
        if timed_out or not (tmp_dir / "result.pkl").is_file():
            timed_out = reason[0] if reason else "stopped by the batch scheduler"
        stop.clear()
    if _STOPPING.is_set() and proc.returncode != 0:  # stopped by stop_runs(): as Ctrl-C above
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise KeyboardInterrupt
    msg = None
    if not timed_out and (tmp_dir / "result.pkl").is_file():
        with open(tmp_dir / "result.pkl", "rb") as f:
            msg = pickle.load(f)
    for name in ("input.pkl", "result.pkl"):
        (tmp_dir / name).unlink(missing_ok=True)
    return _Exit(msg, timed_out, proc.returncode, data_peak[0])


#: a run that fails while its data segment is this close to the host budget failed of it
AT_BUDGET = 0.8


def _at_host_budget(cfg: RunConfig, ex: _Exit, ended: _Ended) -> None:
    """A run that died by a signal or failed while its data segment was at its host budget ran
    out of memory (RLIMIT_DATA makes allocations fail wherever they are: a SIGSEGV in C code, an
    OSError in Python's import machinery): classified ``oom`` with the evidence."""
    budget = cfg.limits.host_budget_bytes
    if not budget or ended.status not in ("crashed", "error"):
        return
    if ex.data_peak_bytes < AT_BUDGET * budget:
        return
    ended.error = (
        f"{ended.error}: under limits.host_memory_budget={cfg.limits.host_memory_budget} (the "
        f"run process's data segment reached {fmt_bytes(ex.data_peak_bytes)} of "
        f"{fmt_bytes(budget)} when last sampled)"
    )
    ended.status = "oom"


def _outcome(pre: _Prepared, ex: _Exit) -> _Ended:
    """The verdict of a finished run process."""
    ended = _verdict(pre, ex.msg, ex.timed_out, ex.code)
    _at_host_budget(pre.cfg, ex, ended)
    return ended


def _verdict(
    pre: _Prepared, msg: dict[str, Any] | None, timed_out: str | None, code: int | None
) -> _Ended:
    cfg = pre.cfg
    body: RunReport | None = None
    measures: dict[str, Any] = {}
    traceback_text = None
    if msg is not None and msg["kind"] == "ok":
        status, error = "ok", None
        body = msg["body"]
        assert isinstance(body, RunReport)
        measures = body.measures
        budget = cfg.limits.device_budget_bytes
        est = measures.get("est_device_peak_bytes")
        if budget and measures.get("device") == "cpu" and est and est > budget:
            # no accelerator to enforce it on: the budget is checked against the estimate
            status = "oom"
            error = (
                f"emulated out of memory: estimated device peak {fmt_bytes(est)} > "
                f"limits.device_memory_budget={cfg.limits.device_memory_budget} (CPU run: "
                "checked against the census+tracked estimate)"
            )
    elif msg is not None:
        status, error = msg["status"], msg["error"]
        measures = msg.get("measures", {})
        traceback_text = msg.get("traceback")
    elif timed_out:
        status, error = "timeout", timed_out
    elif code is not None and code < 0:
        sig = signal.Signals(-code).name
        status = "oom" if (sig == "SIGKILL" and cfg.limits.host_budget_bytes) else "crashed"
        error = f"run process killed by {sig}"
        if sig == "SIGKILL":
            error += " (the kernel's OOM killer, or an external kill)"
    else:
        status, error = "crashed", f"run process exited with code {code} and no result"
    if status != "ok":
        dev = cfg.device
        if dev == "auto":  # what the run would have used
            import torch

            dev = "cuda" if torch.cuda.is_available() else "cpu"
        measures.setdefault("device", dev)
        measures.setdefault("weights", pre.weights)
    return _Ended(status, error, body, measures, traceback_text)


def _video_record(video: Any) -> dict[str, Any]:
    return {
        "source_id": video.source_id,
        "sam2_path": video.sam2_path,
        "height": video.height,
        "width": video.width,
        "num_frames": video.num_frames,
        "ground_truth": video.has_ground_truth,
    }


def run_isolated(cfg: RunConfig) -> RunOutcome:
    """Validate, run in an isolated process, record. Returns the row and where it was written.

    Raises:
        InputError: bad input (nothing is written).
    """
    pre = _prepare(cfg)
    video, prompts = pre.video, pre.prompts
    run_id = new_run_id()
    tmp_dir = pre.results / ".tmp" / run_id
    t0 = time.perf_counter()
    try:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        claim(tmp_dir)
        ex = _launch(pre, tmp_dir, run_id)
    except OSError as e:  # a full disk, a results dir made read-only: nothing half-written
        _discard(pre, tmp_dir)
        raise InputError(
            f"results_dir: cannot write to {str(pre.results)!r} ({e.strerror or e})"
        ) from None
    wall_s = time.perf_counter() - t0
    if ex.msg is not None and ex.msg["kind"] == "input_error":
        _discard(pre, tmp_dir)
        raise InputError(ex.msg["message"])
    ended = _outcome(pre, ex)
    measures, body = ended.measures, ended.body
    row = make_row(
        cfg, run_id=run_id, status=ended.status, error=ended.error,
        num_frames=video.num_frames, num_objects=len({p.obj_id for p in prompts}),
        num_cond_frames=len({p.frame for p in prompts}), measures=measures, version=_version(),
    )
    if row["total_s"] is None:
        row["total_s"] = wall_s
    job = slurm_job()
    row["scheduler_job"] = job_label(job)
    row["sweep_id"] = os.environ.get(SWEEP_ID_ENV) or None
    report = {
        "schema": REPORT_SCHEMA,
        "row": row,
        "config": cfg.to_dict(),
        "config_hash": config_hash(cfg),
        "scheduler": job,
        "video": _video_record(video),
        "prompts": [p.describe() for p in prompts],
        "wall_s": wall_s,
        "traceback": ended.traceback,
        **({k: v for k, v in body.to_dict().items() if k != "measures"} if body else {}),
    }
    # the run's folder (log, streamed masks) moves into place; report.json is written last
    rp = report_path(pre.results, run_id)
    rp.parent.parent.mkdir(parents=True, exist_ok=True)
    (tmp_dir / OWNER_FILE).unlink(missing_ok=True)
    os.replace(tmp_dir, rp.parent)
    atomic_write_json(rp.parent / "config.json", cfg.to_dict())
    atomic_write_json(rp, report)
    return RunOutcome(row, rp)

"""``sam2tune tune``: search the knob space with Optuna under accelerator and host budgets.

Every trial is screened with the memory model (instant); the best few feasible ones are then
confirmed by real short runs (isolated processes, so an OOM marks the trial infeasible). The
study lives in an Optuna ``JournalStorage`` file (default) or any RDB URL, so a killed tuner
resumes without losing a completed trial and several workers can share one study.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from sam2tune.memory_model.memory import Candidate, MemoryModel, Prediction, Workload, predict
from sam2tune.tune.space import candidates, escalation, image_sizes, score

__all__ = [
    "TuneSpec",
    "run_tuner",
    "choose",
    "ranked",
    "screen",
    "evaluate",
    "open_study",
    "Choice",
]

_HAS_SET_CONSTRAINT = hasattr(optuna.trial.Trial, "set_constraint")


def _set_constraints(trial: optuna.Trial, device_excess: float, host_excess: float) -> None:
    """Feasible when both are <= 0 (predicted or measured peak minus the budget)."""
    trial.set_user_attr("constraints", [device_excess, host_excess])
    if _HAS_SET_CONSTRAINT:
        trial.set_constraint("device_peak_over_budget", device_excess)
        trial.set_constraint("host_peak_over_budget", host_excess)


@dataclass
class TuneSpec:
    """What ``tune`` searches for: workload, budgets, trials, confirmations, storage."""
    workload: Workload
    budget_bytes: int
    host_budget_bytes: int
    device_kind: str = "cuda"
    n_trials: int = 60
    confirm: int = 0  # real short runs for the best feasible trials
    confirm_frames: int = 8
    storage: str | None = None  # None = journal file under results_dir/tune/
    study_name: str | None = None
    results_dir: str = "results"
    seed: int = 0
    impls: tuple[str, ...] = ("sam2",)
    data: pd.DataFrame | None = field(default=None, repr=False)


@dataclass
class Choice:
    """One evaluated candidate: predicted peaks, scores, feasibility, confirmation."""
    candidate: Candidate
    prediction: Prediction
    quality: float
    speed: float
    quality_source: str
    speed_source: str
    escalation: int
    feasible: bool
    confirmed: dict[str, Any] | None = None


def evaluate(
    w: Workload,
    c: Candidate,
    budget: int,
    host_budget: int,
    model: MemoryModel,
    device_kind: str,
    data: pd.DataFrame | None = None,
) -> Choice:
    """Predicted peaks, expected quality and speed, and feasibility of one candidate."""
    p = predict(w, c, model, device_kind)
    s = score(c, w, data, device_kind)
    ok = p.device_peak_bytes <= budget and p.host_peak_bytes <= host_budget
    return Choice(c, p, s.quality, s.speed, s.quality_source, s.speed_source, escalation(c, w), ok)


def _evaluate(spec: TuneSpec, c: Candidate, model: MemoryModel) -> Choice:
    return evaluate(
        spec.workload,
        c,
        spec.budget_bytes,
        spec.host_budget_bytes,
        model,
        spec.device_kind,
        spec.data,
    )


def screen(
    w: Workload,
    budget: int,
    host_budget: int,
    model: MemoryModel,
    device_kind: str,
    data: pd.DataFrame | None = None,
    impls: tuple[str, ...] = ("sam2",),
) -> list[Choice]:
    """Every candidate of the knob space, evaluated (the one screen ``tune``, ``recommend`` and
    the lookup use; ``data``: recorded runs that score quality and speed; ``impls``: the
    implementations a choice may use)."""
    return [
        evaluate(w, c, budget, host_budget, model, device_kind, data)
        for c in candidates(w, device_kind, impls)
    ]


#: speeds within this relative margin rank as equal (below the speed model's held-out error on
#: one configuration; two configurations of one workload share most of it), so the least
#: escalated of them wins
SPEED_TIE = 0.05


#: (name, default) of the Candidate fields that are knobs (image size and impl aside)
_KNOBS = [(f.name, f.default) for f in dataclasses.fields(Candidate)
          if f.name not in ("image_size", "impl")]


def _knobs_changed(c: Candidate) -> int:
    """How many knobs ``c`` sets away from SAM 2's defaults."""
    return sum(getattr(c, name) != default for name, default in _KNOBS)


def _tie_key(c: Choice) -> tuple[int, int, float, int]:
    """The order within a speed tie: least escalated, fewest knobs, fastest, least memory."""
    return (c.escalation, _knobs_changed(c.candidate), -round(c.speed, 4),
            int(c.prediction.device_peak_bytes))


def ranked(choices: list[Choice]) -> list[Choice]:
    """The feasible choices, best first: highest quality; among those, every choice within
    :data:`SPEED_TIE` of the fastest ranks alike, and of them the least escalated first, then
    the fewest knobs changed, then the fastest, then the least predicted accelerator memory (a
    choice 2.6 % faster than a simpler one does not win; fixed bins of speed would split such a
    pair at a bin's edge); then the next tier the same way."""
    rest = sorted((c for c in choices if c.feasible), key=lambda c: (-round(c.quality, 6),
                                                                     -c.speed))
    out: list[Choice] = []
    i = 0
    while i < len(rest):  # sorted by speed within a quality: each tier is a run of the list
        top, j = rest[i], i + 1
        while (j < len(rest) and round(rest[j].quality, 6) == round(top.quality, 6)
               and rest[j].speed * (1 + SPEED_TIE) >= top.speed):
            j += 1
        out += sorted(rest[i:j], key=_tie_key)
        i = j
    return out


def choose(choices: list[Choice]) -> Choice | None:
    """The best feasible choice (:func:`ranked`'s first, found in one pass), or None."""
    feasible = [c for c in choices if c.feasible]
    if not feasible:
        return None
    q = max(round(c.quality, 6) for c in feasible)
    top = [c for c in feasible if round(c.quality, 6) == q]
    fastest = max(c.speed for c in top)
    return min((c for c in top if c.speed * (1 + SPEED_TIE) >= fastest), key=_tie_key)


def default_study_name(spec: TuneSpec) -> str:
    """A stable study name from the workload, budgets and device kind."""
    key = json.dumps(
        [asdict(spec.workload), spec.budget_bytes, spec.host_budget_bytes, spec.device_kind],
        sort_keys=True,
    )
    return "sam2tune-" + hashlib.sha256(key.encode()).hexdigest()[:12]


HEARTBEAT_S = 10  # RDB storages: a worker's heartbeat while it runs a trial


class _NoInterruptTraceback(logging.Filter):
    """Optuna logs a trial stopped by Ctrl-C / SIGTERM as failed, with the traceback: the
    command prints what was recorded instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, KeyboardInterrupt) and "KeyboardInterrupt" not in str(
            record.msg
        )


def _storage(spec: TuneSpec) -> Any:
    if spec.storage:
        # an RDB server shared by several workers: heartbeats let a surviving worker mark a
        # killed worker's unfinished trial failed instead of leaving it running forever
        return optuna.storages.RDBStorage(
            spec.storage, heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S
        )
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(spec.results_dir) / "tune" / "optuna_journal.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def stored_trials(spec: TuneSpec) -> str:
    """What the study holds now, in words (after an interruption)."""
    name = spec.study_name or default_study_name(spec)
    try:
        study = optuna.load_study(study_name=name, storage=_storage(spec))
        done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        return f"study {name} holds {done} complete trials"
    except Exception:
        return f"study {name}: nothing recorded yet"


def open_study(spec: TuneSpec) -> optuna.Study:
    """Create or resume the study (journal file by default; any Optuna RDB URL works too)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are summarised by the CLI
    # records of optuna.* loggers reach the library's handler: the filter goes on it
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, _NoInterruptTraceback) for f in handler.filters):
            handler.addFilter(_NoInterruptTraceback())
    storage = _storage(spec)
    if _HAS_SET_CONSTRAINT:  # Optuna >= 5: samplers read trial.set_constraint values
        sampler = optuna.samplers.TPESampler(seed=spec.seed)
    else:  # Optuna 4: the same values through constraints_func
        sampler = optuna.samplers.TPESampler(
            seed=spec.seed, constraints_func=lambda t: t.user_attrs.get("constraints", [1.0, 1.0])
        )
    return optuna.create_study(
        study_name=spec.study_name or default_study_name(spec),
        storage=storage,
        load_if_exists=True,
        directions=["maximize", "maximize"],
        sampler=sampler,
    )


#: the Candidate fields each implementation's search space suggests (besides ``impl``)
_PARAMS = {
    "transformers": (
        "offload_video_to_cpu", "offload_state_to_cpu", "max_cond_frames_in_attn", "dtype",
        "image_size",
    ),
    "sam2": (
        "strategy", "offload_video_to_cpu", "offload_state_to_cpu", "max_cond_frames_in_attn",
        "dtype", "predictor", "segment_frames", "object_batch", "image_size",
    ),
}


def _suggest(trial: optuna.Trial, spec: TuneSpec) -> Candidate:
    w = spec.workload
    space = candidates(w, spec.device_kind)
    impl = (
        trial.suggest_categorical("impl", list(spec.impls)) if len(spec.impls) > 1
        else spec.impls[0]
    )
    if impl == "transformers":  # the knobs transformers maps (a conditional search space)
        return Candidate(
            impl="transformers",
            offload_video_to_cpu=trial.suggest_categorical("offload_video_to_cpu", [False, True]),
            offload_state_to_cpu=trial.suggest_categorical("offload_state_to_cpu", [False, True]),
            max_cond_frames_in_attn=trial.suggest_categorical(
                "max_cond_frames_in_attn", sorted({c.max_cond_frames_in_attn for c in space})
            ),
            dtype=trial.suggest_categorical("dtype", sorted({c.dtype for c in space})),
            image_size=trial.suggest_categorical("image_size", image_sizes(w.image_size)),
        )
    strategy = trial.suggest_categorical("strategy", ["stock", "release", "stream"])
    ov = trial.suggest_categorical("offload_video_to_cpu", [False, True])
    if strategy == "stream":
        ov = False
    c = Candidate(
        offload_video_to_cpu=ov,
        offload_state_to_cpu=trial.suggest_categorical("offload_state_to_cpu", [False, True]),
        max_cond_frames_in_attn=trial.suggest_categorical(
            "max_cond_frames_in_attn", sorted({c.max_cond_frames_in_attn for c in space})
        ),
        dtype=trial.suggest_categorical("dtype", sorted({c.dtype for c in space})),
        predictor=trial.suggest_categorical("predictor", sorted({c.predictor for c in space})),
        strategy=strategy,
        segment_frames=trial.suggest_categorical(
            "segment_frames", sorted({c.segment_frames for c in space})
        ),
        image_size=trial.suggest_categorical("image_size", image_sizes(w.image_size)),
    )
    batches = sorted({c.object_batch for c in space})
    if len(batches) > 1:  # suggested last: the other knobs' sampling is as it was
        ob = trial.suggest_categorical("object_batch", batches)
        c = dataclasses.replace(c, object_batch=ob if c.predictor == "per_object" else 1)
    return c


def _candidate_from_params(p: dict[str, Any], spec: TuneSpec) -> Candidate:
    """The candidate a trial's params describe (``impl`` is a param only when the study searches
    several implementations; otherwise the one it searches)."""
    p = dict(p)
    p.setdefault("impl", spec.impls[0])
    c = Candidate.from_knobs(p, image_size=int(p["image_size"]))
    if c.strategy == "stream":  # stream never holds the whole video: the offload is moot
        c = dataclasses.replace(c, offload_video_to_cpu=False)
    if c.predictor != "per_object":  # the legacy predictor batches every object already
        c = dataclasses.replace(c, object_batch=1)
    return c


def _confirm(spec: TuneSpec, c: Candidate, model: MemoryModel) -> dict[str, Any]:
    """A real short run of the candidate (isolated): its status and measured peaks, and the
    full-length prediction rescaled by measured / predicted on the short run."""
    from sam2tune.config.presets import model_preset
    from sam2tune.config.schema import (
        ImplConfig,
        LimitsConfig,
        ProbeConfig,
        RunConfig,
        VideoConfig,
    )
    from sam2tune.memory_model.calibrate import workload_of
    from sam2tune.runner.launcher import run_isolated
    from sam2tune.sweep import already_done

    w = spec.workload
    n = min(spec.confirm_frames, w.num_frames)
    cfg = RunConfig(
        model=model_preset(w.model, image_size=c.image_size or w.image_size),
        video=VideoConfig(
            num_frames=n, num_objects=min(w.num_objects, 4), height=w.video_height,
            width=w.video_width,
        ),
        knobs=dataclasses.replace(
            c.knobs(), segment_frames=c.segment_frames if c.segment_frames < n else 0
        ),
        impl=ImplConfig(c.impl),
        limits=LimitsConfig(
            host_memory_budget=str(spec.host_budget_bytes),
            device_memory_budget=str(spec.budget_bytes) if spec.device_kind == "cuda" else None,
            timeout_s=1800,
        ),
        probe=ProbeConfig(reference=False),
        device=spec.device_kind if spec.device_kind == "cuda" else "cpu",
        results_dir=spec.results_dir,
    )
    done = already_done(cfg)
    if done:
        from sam2tune.results import load_results

        df = load_results(spec.results_dir)
        row = df[df["run_id"] == done].iloc[0].to_dict()
    else:
        row = run_isolated(cfg).row
    short = predict(workload_of(cfg), c, model, spec.device_kind)
    measured = row.get("cuda_max_allocated_bytes") or row.get("est_device_peak_bytes")
    out = {
        "run_id": row["run_id"],
        "status": row["status"],
        "frames": n,
        "measured_device_bytes": measured,
        "measured_host_rss_bytes": row.get("peak_host_rss_bytes"),
        "measured_kind": "measured (CUDA)" if row.get("cuda_max_allocated_bytes") else "estimated",
    }
    if row["status"] == "ok" and measured:
        out["scale"] = float(measured) / short.device_peak_bytes
    return out


def run_tuner(
    spec: TuneSpec, model: MemoryModel, progress: bool = True
) -> tuple[optuna.Study, list[Choice]]:
    """Screen ``spec.n_trials`` trials with the model (resuming a stored study), confirm the best
    ``spec.confirm`` feasible ones with real short runs, and return every evaluated choice."""
    study = open_study(spec)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    left = max(spec.n_trials - len(done), 0)
    if left:
        # several workers may share the study: stop when it holds n_trials finished trials,
        # whoever ran them (the objective prunes a trial started beyond the cap by a race)
        cap = optuna.study.MaxTrialsCallback(
            spec.n_trials, states=(optuna.trial.TrialState.COMPLETE,)
        )
        with _stop_on_signals(study) as stopped:
            study.optimize(
                _objective(spec, model),
                n_trials=left,
                show_progress_bar=progress,
                catch=(Exception,),
                callbacks=[cap],
            )
        if stopped:  # after the trial in flight was stored
            raise KeyboardInterrupt
    choices = _choices(study, spec, model)
    if spec.confirm:
        _confirm_best(study, spec, choices, model)
    return study, choices


@contextlib.contextmanager
def _stop_on_signals(study: optuna.Study) -> Iterator[list[int]]:
    """Ctrl-C / SIGTERM stop the study after the trial in flight is stored (a signal raised
    inside Optuna's storage write would leave the trial half-told and raise from Optuna's own
    cleanup); yields the signals received."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def stop(signum: int, frame: Any) -> None:
        got.append(signum)
        with contextlib.suppress(RuntimeError):  # between trials: the loop ends anyway
            study.stop()

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(worker: str | None) -> bool:
    """Whether a trial's worker may still finish it: this host's dead pids cannot (another
    host's are trusted: an RDB storage's heartbeats fail their stale trials)."""
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    import psutil

    try:  # a killed worker not yet reaped by its parent is a zombie: it finishes nothing
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


#: a trial at the cap waits this long for a live worker's running trial to end (trials take
#: milliseconds; a confirmation is not a trial here)
CAP_WAIT_S = 60.0
#: a running trial that names no worker yet is its worker's only for this long after its start
_UNNAMED_S = 10.0


def _counts(t: optuna.trial.FrozenTrial) -> bool:
    """Whether trial ``t`` holds a slot under the cap: complete, or running in a worker that may
    still finish it."""
    if t.state == optuna.trial.TrialState.COMPLETE:
        return True
    worker = t.user_attrs.get("worker")
    if worker is None:  # created, its worker not recorded yet: only just now
        start = t.datetime_start
        return start is not None and (datetime.now() - start).total_seconds() < _UNNAMED_S
    return _alive(worker)


def _beyond_cap(trial: optuna.Trial, n_trials: int) -> bool:
    """Whether ``trial`` would make the study hold more than ``n_trials`` finished trials: trial
    numbers are assigned atomically by the storage, so every worker counts the same trials
    before this one. While a slot is held only by another live worker's running trial, wait for
    it to end (it may fail and free the slot)."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
    deadline = time.monotonic() + CAP_WAIT_S
    while True:
        before = [
            t for t in trial.study.get_trials(deepcopy=False, states=states)
            if t.number < trial.number and _counts(t)
        ]
        complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in before)
        if len(before) < n_trials:
            return False
        if complete >= n_trials or time.monotonic() > deadline:
            return True
        with contextlib.suppress(Exception):  # RDB heartbeats: fail a dead worker's trials
            optuna.storages.fail_stale_trials(trial.study)
        time.sleep(0.2)


def _objective(
    spec: TuneSpec, model: MemoryModel
) -> Callable[[optuna.Trial], tuple[float, float]]:
    def objective(trial: optuna.Trial) -> tuple[float, float]:
        trial.set_user_attr("worker", _worker())  # shared studies: who runs it
        if _beyond_cap(trial, spec.n_trials):
            raise optuna.TrialPruned("the study already holds n_trials trials")
        c = _suggest(trial, spec)
        ch = _evaluate(spec, c, model)
        trial.set_user_attr("device_peak_bytes", ch.prediction.device_peak_bytes)
        trial.set_user_attr("host_peak_bytes", ch.prediction.host_peak_bytes)
        _set_constraints(
            trial,
            ch.prediction.device_peak_bytes - spec.budget_bytes,
            ch.prediction.host_peak_bytes - spec.host_budget_bytes,
        )
        trial.set_user_attr("escalation", ch.escalation)
        trial.set_user_attr("quality_source", ch.quality_source)
        return ch.quality, ch.speed

    return objective


def _choices(study: optuna.Study, spec: TuneSpec, model: MemoryModel) -> list[Choice]:
    """Every candidate the study evaluated (a confirmation's measured verdict applied), and
    every other candidate of the space screened by the model."""
    by_candidate: dict[Candidate, Choice] = {}
    for t in study.trials:
        if t.state != optuna.trial.TrialState.COMPLETE:
            continue
        c = _candidate_from_params(t.params, spec)
        if c not in by_candidate:
            by_candidate[c] = _evaluate(spec, c, model)
        if "confirmed" in t.user_attrs:  # a confirmation trial: the measured verdict wins
            ch = by_candidate[c]
            ch.confirmed = t.user_attrs["confirmed"]
            ch.feasible = ch.feasible and ch.confirmed.get("status") == "ok"
    # the model screen is instant: every candidate the search did not reach is evaluated too, so
    # the answer does not depend on the sampler's coverage (and equals `recommend`'s)
    for ch in screen(
        spec.workload,
        spec.budget_bytes,
        spec.host_budget_bytes,
        model,
        spec.device_kind,
        spec.data,
        spec.impls,
    ):
        by_candidate.setdefault(ch.candidate, ch)
    return list(by_candidate.values())


def _confirm_best(
    study: optuna.Study, spec: TuneSpec, choices: list[Choice], model: MemoryModel
) -> None:
    """Confirm the best ``spec.confirm`` feasible candidates by real runs; one that fails (OOM,
    over budget) drops out and the next is confirmed instead."""
    confirmed_ok = 0
    for ch in ranked(choices):
        if confirmed_ok >= spec.confirm:
            break
        if ch.confirmed is None:
            conf = _confirm(spec, ch.candidate, model)
            ch.confirmed = conf
            if conf["status"] != "ok":
                ch.feasible = False
            elif "scale" in conf:
                scaled = ch.prediction.device_peak_bytes * max(1.0, conf["scale"])
                ch.feasible = scaled <= spec.budget_bytes
            _record_confirmation(study, spec, ch, conf)
        confirmed_ok += ch.feasible


def _record_confirmation(
    study: optuna.Study, spec: TuneSpec, ch: Choice, conf: dict[str, Any]
) -> None:
    """Store the confirmation as a trial of its own: same params, the measured verdict as its
    constraints, the run's id and figures as user attributes."""
    c = ch.candidate
    # the params the trial's own search space suggests for this implementation (_suggest)
    names = _PARAMS["transformers" if c.impl == "transformers" else "sam2"]
    params: dict[str, Any] = {n: getattr(c, n) for n in names}
    if len(spec.impls) > 1:
        params["impl"] = c.impl
    study.enqueue_trial(params, user_attrs={"confirmed": conf})
    trial = study.ask()
    _suggest(trial, spec)  # takes the enqueued values
    _set_constraints(trial, -1.0 if ch.feasible else 1.0, -1.0)
    study.tell(trial, [ch.quality, ch.speed])

"""Sweeps: resume (skip points already recorded ok), progress with ETA, closing summary.

Sweeps are Hydra multiruns (``sam2tune run -m ...``): Hydra's launcher runs the points (basic =
sequential, one at a time, the default: parallel runs on one GPU corrupt each other's peak-memory
figures; joblib = several local workers; submitit = Slurm). :class:`SweepProgress` is a Hydra
callback registered in ``conf/run.yaml``.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections import Counter
from typing import Any

from hydra.experimental.callback import Callback

from sam2tune.config.schema import RunConfig, config_hash
from sam2tune.record import STATUSES, SWEEP_ID_ENV

__all__ = ["already_done", "count_jobs", "SweepProgress", "sweep_summary"]


def already_done(cfg: RunConfig) -> str | None:
    """The run id of a recorded ``ok`` row with this config's hash, if any."""
    from pathlib import Path

    from sam2tune.results import load_results

    if not Path(cfg.results_dir).is_dir():
        return None
    df = load_results(cfg.results_dir)
    if df.empty:
        return None
    hit = df[(df["config_hash"] == config_hash(cfg)) & (df["status"] == "ok")]
    return None if hit.empty else str(hit.iloc[-1]["run_id"])


def _sweep_axes(
    task_overrides: list[str], sweeper_params: dict[str, Any] | None
) -> list[list[str]]:
    """One list of ``key=value`` per key of a basic-sweeper multirun (command line beats an
    experiment preset's ``hydra.sweeper.params``); a plain override is a one-value axis."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    by_key: dict[str, str] = {str(k): f"{k}={v}" for k, v in (sweeper_params or {}).items()}
    parser = OverridesParser.create()
    for ov in parser.parse_overrides(list(task_overrides)):
        by_key[ov.get_key_element()] = ov.input_line or ""
    axes = []
    for ov in parser.parse_overrides(list(by_key.values())):
        key = ov.get_key_element()
        if ov.is_sweep_override():
            axes.append([f"{key}={v}" for v in ov.sweep_string_iterator()])
        else:
            axes.append([ov.input_line or ""])
    return axes


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """Every point of ``sam2tune run -m <overrides>`` as its own override list (the command
    line's sweeps, and an experiment preset's ``hydra.sweeper.params``; command line wins)."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sam2tune.config.store import compose

    task = [o for o in overrides if not o.startswith("-")]
    parsed = OverridesParser.create().parse_overrides(task)
    plain = [o.input_line or "" for o in parsed if not o.is_sweep_override()]
    hc = compose([o for o in plain if not o.startswith("hydra")], return_hydra_config=True)
    params = dict(hc.hydra.sweeper.get("params") or {})
    return [list(p) for p in itertools.product(*_sweep_axes(task, params))]


def count_jobs(task_overrides: list[str], sweeper_params: dict[str, Any] | None) -> int:
    """How many points a basic-sweeper multirun has (command line beats preset params)."""
    total = 1
    for axis in _sweep_axes(task_overrides, sweeper_params):
        total *= len(axis)
    return total


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def sweep_summary(statuses: Counter) -> str:
    """One line counting a sweep's points by status (and how many failed)."""
    order = ["ok", "skipped", "oom", "timeout", "crashed", "error"]
    cells = [f"{k}={statuses.get(k, 0)}" for k in order]
    failed = sum(statuses.get(k, 0) for k in ("oom", "timeout", "crashed", "error"))
    return (
        f"sweep summary: {sum(statuses.values())} points: "
        + "  ".join(cells)
        + f"  (failed={failed})"
    )


class SweepProgress(Callback):
    """Prints ``[sweep k/n] status ... elapsed, ETA`` after each point and a closing table.

    Per-point lines come from the process that runs the point (with the basic launcher, the
    sweep's own process); the closing table counts the sweep's rows in the results dir, so it
    is right for any launcher.
    """

    def __init__(self) -> None:
        self.t0 = 0.0
        self.total = 0
        self.done = 0
        self.statuses: Counter = Counter()
        self.started = ""
        self.sweep_id = ""

    def on_multirun_start(self, config, **kwargs) -> None:
        """Start the clock and count the sweep's points."""
        self.t0 = time.monotonic()
        self.started = time.strftime("%Y%m%d-%H%M%S")
        self.sweep_id = f"{self.started}-{uuid.uuid4().hex[:8]}"
        os.environ[SWEEP_ID_ENV] = self.sweep_id  # the points' rows carry it (workers inherit)
        try:
            self.total = count_jobs(
                list(config.hydra.overrides.task), config.hydra.sweeper.get("params")
            )
        except Exception:
            self.total = 0
        print(f"[sweep] {self.total or '?'} points, each an isolated run", file=sys.stderr)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        """Print the finished point's status, elapsed time and ETA."""
        if not self.t0:
            return  # a single run, or a worker process of a parallel launcher
        self.done += 1
        try:
            value = job_return.return_value
            status = value.get("status", "?") if isinstance(value, dict) else "?"
        except BaseException:  # noqa: BLE001 - the job raised
            status = "error"
        self.statuses[status] += 1
        elapsed = time.monotonic() - self.t0
        left = max(self.total - self.done, 0)
        eta = _fmt_s(elapsed / self.done * left) if self.total else "?"
        total = self.total or "?"
        print(
            f"[sweep {self.done}/{total}] {status}  elapsed {_fmt_s(elapsed)}  ETA {eta}",
            file=sys.stderr,
            flush=True,
        )

    def on_multirun_end(self, config, **kwargs) -> None:
        """Print what this sweep ran (its own rows, by ``sweep_id``) and, apart, what the results
        dir holds."""
        from sam2tune.results import load_results

        counts = Counter(self.statuses)
        held: Counter[str] = Counter()
        try:
            df = load_results(config.results_dir)
            mine = df[df["sweep_id"] == self.sweep_id] if not df.empty else df
            recorded = Counter(mine["status"]) if not mine.empty else Counter()
            skipped = counts.get("skipped", 0)
            counts = recorded
            counts["skipped"] = skipped or max(self.total - sum(recorded.values()), 0)
            held = Counter(df["status"]) if not df.empty else Counter()
        except Exception:
            pass
        os.environ.pop(SWEEP_ID_ENV, None)
        print(sweep_summary(counts), file=sys.stderr, flush=True)
        if held:
            cells = "  ".join(f"{k}={held[k]}" for k in STATUSES if held.get(k))
            print(
                f"results dir holds {sum(held.values())} runs in all: {cells}",
                file=sys.stderr,
                flush=True,
            )
        print(f"results: {config.results_dir} (sam2tune.load_results)", file=sys.stderr)

"""``sam2tune`` command line: one registry of commands (:data:`COMMANDS`: name, typed
arguments, function, help). ``run`` speaks Hydra's override grammar (and sweeps with ``-m``);
every other command takes ``key=value`` onto its typed arguments (:mod:`sam2tune.config.args`),
so ``+key=``, typos, types and ``--help`` behave the same everywhere."""

from __future__ import annotations

import re
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from sam2tune import __version__
from sam2tune.config.args import arg, help_lines, parse, split_args
from sam2tune.config.store import (
    CONF_DIR,
    check_override_keys,
    check_repeated_keys,
    config_error_line,
    register,
)
from sam2tune.errors import InputError
from sam2tune.paths import check_results_dir
from sam2tune.resources import data_dir
from sam2tune.runner.engines import check_launcher
from sam2tune.tune import cli as tcli
from sam2tune.tune.args import (
    CalibrateArgs,
    FitArgs,
    LookupArgs,
    PredictArgs,
    RecommendArgs,
    TuneArgs,
)

__all__ = ["main", "COMMANDS", "Command", "usage", "command_help"]


STUDIES_DIR = data_dir("experiments")


def _fail(message: str, code: int = 2) -> NoReturn:
    print(f"sam2tune: error: {message}", file=sys.stderr)
    sys.exit(code)


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _check_group_choices(overrides: list[str]) -> None:
    """One clear line for an unknown config-group option (Hydra's own message is a page)."""
    for ov in overrides:
        m = re.match(r"^[+~]*(model|video|experiment|impl)=(.*)$", ov)
        if not m:
            continue
        group, values = m.groups()
        for value in values.split(","):
            if value and value != "null" and value not in _choices(group):
                _fail(
                    f"{group}: unknown {group} {value!r} "
                    f"(choose from {', '.join(_choices(group))})"
                )


def _validate_sweep(overrides: list[str]) -> None:
    """Every sweep point's config and inputs, checked before the first point runs."""
    from sam2tune.config.store import compose_run
    from sam2tune.paths import cache_dir
    from sam2tune.sweep import expand_sweep
    from sam2tune.video.sources import resolve_video

    try:
        points = expand_sweep(overrides)
    except Exception as e:  # a malformed sweep: Hydra's own message, first line
        _fail(config_error_line(e))
    seen_videos: set[str] = set()
    for i, point in enumerate(points):
        label = " ".join(p for p in point if "," not in p and not p.startswith("hydra"))
        try:
            cfg = compose_run(point)
            check_results_dir(cfg.results_dir)
            key = repr(cfg.video)
            if cfg.video.kind != "synthetic" and key not in seen_videos:
                resolve_video(cfg.video, cache_dir(cfg.cache_dir))  # frames decodable to the end
                seen_videos.add(key)
        except InputError as e:
            _fail(f"sweep point {i + 1}/{len(points)} ({label}): {e}; nothing was run")


#: ``sam2tune run``'s exit status by the single run's status (a sweep exits 0 when it ran:
#: its summary counts the failed points); 2 is bad input, 130 an interruption
RUN_EXIT_CODES = {"ok": 0, "oom": 3, "timeout": 4, "crashed": 5, "error": 6}


def _prevalidate(overrides: list[str], multirun: bool) -> None:
    """Keys, group choices and values in one line each, before Hydra's app prints its own
    page: every sweep point with ``-m``, the one run otherwise (Hydra's flags aside)."""
    from sam2tune.config.store import compose_run

    try:
        check_repeated_keys(overrides)
        check_override_keys(overrides)
    except InputError as e:
        _fail(str(e))
    _check_group_choices(overrides)
    if multirun:
        _validate_sweep(overrides)
        try:
            check_launcher(overrides)
        except InputError as e:
            _fail(str(e))
    elif not any(o.startswith("-") for o in overrides):  # --cfg, --info: Hydra's own
        try:
            cfg = compose_run([o for o in overrides if not o.lstrip("+~").startswith("hydra")])
            check_results_dir(cfg.results_dir)
        except InputError as e:
            _fail(str(e))


def _run(overrides: list[str]) -> None:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    multirun = "-m" in overrides or "--multirun" in overrides
    _prevalidate(overrides, multirun)
    if multirun:
        _remove_stale(overrides)
    register()

    @hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="run")
    def _main(cfg: DictConfig) -> dict:
        from sam2tune.config.schema import RunConfig
        from sam2tune.runner.launcher import run_isolated
        from sam2tune.summary import print_summary

        try:
            run_cfg = OmegaConf.to_object(cfg)
        except Exception as e:  # __post_init__ validation, wrapped by OmegaConf
            _fail(config_error_line(e))
        assert isinstance(run_cfg, RunConfig)
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from sam2tune.sweep import already_done

        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        done = already_done(run_cfg) if multirun and not run_cfg.force else None
        if done is not None:
            print(f"skip: already recorded ok as run {done} (force=true runs it again)")
            return {"status": "skipped", "run_id": done}
        from sam2tune.runner.scheduler import watch_signals

        watch_signals()  # in a Slurm job: its time-limit signals end the run as `timeout`
        try:
            outcome = run_isolated(run_cfg)
        except InputError as e:
            if multirun:  # mid-sweep (a results dir made read-only, a full disk): what it kept
                _interrupted_summary(overrides, started, stopped="stopped")
            _fail(str(e))
        print_summary(outcome.row, outcome.report_path)
        ended.append(outcome.row["status"])
        return outcome.row

    sys.argv = ["sam2tune run", *overrides]
    started = time.strftime("%Y%m%d-%H%M%S")
    ended: list[str] = []  # the single run's status
    try:
        _main()
    except KeyboardInterrupt:
        if multirun:
            _interrupted_summary(overrides, started)
        raise
    if not multirun and ended and ended[0] != "ok":
        sys.exit(RUN_EXIT_CODES[ended[0]])


def _results_dir(overrides: list[str]) -> str:
    return next(
        (o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("results_dir=")),
        "results",
    )


def _remove_stale(overrides: list[str]) -> None:
    """A sweep starts by removing the in-flight folders of dead runs in its results dir."""
    from sam2tune.stale import remove_stale

    for d in _results_dir(overrides).split(","):
        gone = remove_stale(d)
        if gone:
            print(
                f"[sweep] removed {len(gone)} folder(s) of runs whose process is gone "
                f"({Path(d) / '.tmp'})",
                file=sys.stderr,
            )


def _interrupted_summary(
    overrides: list[str], started: str, stopped: str = "interrupted"
) -> None:
    """What an interrupted sweep finished (the rows it recorded since it started)."""
    from collections import Counter

    from sam2tune.results import load_results
    from sam2tune.sweep import sweep_summary

    results = _results_dir(overrides)
    try:
        df = load_results(results)
        new = df[df["run_id"] >= started] if not df.empty else df
        counts = Counter(new["status"]) if not new.empty else Counter()
    except Exception:
        counts = Counter()
    print(f"{stopped}: {sweep_summary(counts)}", file=sys.stderr)


@dataclass
class DownloadArgs:
    """Fetch Meta's official SAM 2 checkpoints into the cache (~/.cache/sam2tune/checkpoints, or
    cache_dir/checkpoints), verified by size and hashed; runs find them there by model name.
    Model names may also be given bare: `sam2tune download sam2.1_tiny sam2.1_large`."""

    models: list[str] = arg(None, "model presets to fetch", factory=lambda: ["sam2.1_tiny"])
    all: bool = arg(False, "every model preset")
    cache_dir: str | None = arg(None, "cache root (default ~/.cache/sam2tune)")


def _download(args: list[str]) -> None:
    from sam2tune.adapter.checkpoints import DownloadError, download
    from sam2tune.config.presets import model_preset
    from sam2tune.paths import cache_dir

    rest, bare, kv = list(args), [], []
    while rest:  # model names bare; the older spellings --all and --cache-dir DIR accepted
        a = rest.pop(0)
        if a == "--all":
            kv.append("all=true")
        elif a == "--cache-dir":
            if not rest:
                _fail("download: --cache-dir needs a folder")
            kv.append(f"cache_dir={rest.pop(0)}")
        elif "=" in a or a.startswith("-"):
            kv.append(a)
        else:
            bare.append(a)
    if bare:
        kv.append(f"models=[{','.join(bare)}]")
    da = parse(kv, "download", DownloadArgs)
    names = _choices("model") if da.all else da.models
    root = cache_dir(da.cache_dir)
    for name in names:
        m = model_preset(name)
        print(f"downloading {m.checkpoint_url} -> {root / 'checkpoints'}", file=sys.stderr)
        try:
            path = download(m, root)
        except DownloadError as e:
            _fail(str(e), code=1)
        print(path)


@dataclass
class ReportArgs:
    """HTML + Markdown report of a results folder: environment and provenance, conclusions
    computed from the rows, figures, the run table, unreadable records."""

    results_dir: str = arg("results", "the results folder (its runs/)")
    out: str | None = arg(None, "output folder (default results_dir/report)")
    title: str = arg("sam2tune report", "the report's title")


def _report(args: list[str]) -> None:
    from sam2tune.analysis.report import build_report

    ra = parse(args, "report", ReportArgs)
    results = Path(ra.results_dir)
    if not (results / "runs").is_dir():
        _fail(f"results_dir: no recorded runs under {str(results)!r}")
    out = Path(ra.out or str(results / "report"))
    try:
        html_path, md_path = build_report(results, out, title=ra.title)
    except ValueError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"out: cannot write the report to {str(out)!r} ({e.strerror or e})")
    print(f"report: {html_path}\n        {md_path}")


def studies() -> list[str]:
    """The studies ``sam2tune study`` can run: ``experiments/*.py`` minus benchmarks."""
    return sorted(
        p.stem for p in STUDIES_DIR.glob("*.py") if not p.stem.startswith(("bench_", "_"))
    )


def load_study(name: str) -> ModuleType:
    """Import study ``name`` from ``experiments/`` (an unknown name fails in one line)."""
    import importlib.util

    if name not in studies():
        _fail(f"study: unknown study {name!r} (choose from {', '.join(studies())})")
    spec = importlib.util.spec_from_file_location(
        f"sam2tune_study_{name}", STUDIES_DIR / f"{name}.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@dataclass
class StudyArgs:
    """Run a study from experiments/NAME.py: its sweep (isolated runs), then its report. Any
    `sam2tune run` override besides these applies to every point, e.g. device=cuda."""

    name: str | None = arg(None, "the study (also given bare: `sam2tune study demo`)")
    results_dir: str | None = arg(None, "where its runs and report go (default results/NAME)")


def _study(args: list[str]) -> None:
    import subprocess

    from sam2tune.analysis.report import build_report

    bare = args[:1] if args and "=" not in args[0] and not args[0].startswith("-") else []
    sa, extra = split_args([f"name={a}" for a in bare] + args[len(bare) :], "study", StudyArgs)
    if sa.name is None:
        _fail(f"study: name a study ({', '.join(studies())})")
    name = sa.name
    mod = load_study(name)
    results = sa.results_dir or f"results/{name}"
    for sweep in getattr(mod, "SWEEPS", [mod.SWEEP]):  # every point, before anything runs
        _prevalidate(["-m", *sweep, *extra, f"results_dir={results}"], True)
    print(f"[study {name}] {mod.TITLE}", file=sys.stderr, flush=True)
    # a study runs one sweep (SWEEP) or several (SWEEPS: when its points are not one product)
    for sweep in getattr(mod, "SWEEPS", [mod.SWEEP]):
        cmd = [
            sys.executable,
            "-m",
            "sam2tune",
            "run",
            "-m",
            *sweep,
            *extra,
            f"results_dir={results}",
        ]
        print(
            f"[study {name}] sweep: sam2tune run -m {' '.join(cmd[5:])}",
            file=sys.stderr,
            flush=True,
        )
        rc = subprocess.call(cmd)
        if rc != 0:  # the sweep said why, in one line
            sys.exit(rc)
    html_path, md_path = build_report(
        results,
        Path(results) / "report",
        title=f"sam2tune study: {mod.TITLE}",
        figures=getattr(mod, "FIGURES", None),
        conclusions=getattr(mod, "conclusions", None),
        intro=getattr(mod, "DESCRIPTION", ""),
    )
    print(f"[study {name}] report: {html_path}\n[study {name}]         {md_path}")


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int,
    file: Any = None, line: str | None = None,
) -> None:
    print(f"sam2tune: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """The ``sam2tune`` command: one-line warnings and errors, Ctrl-C / SIGTERM cleaned up."""
    import warnings

    warnings.showwarning = _show_warning  # one line per warning, no source lines
    argv = sys.argv[1:] if argv is None else list(argv)
    import signal

    def _terminate(signum: int, frame: Any) -> NoReturn:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)  # SIGTERM cleans up like Ctrl-C
    try:
        _main(argv)
    except KeyboardInterrupt:
        print("sam2tune: interrupted (runs already recorded are kept)", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `sam2tune --help | head`
        sys.stderr.close()
        sys.exit(0)


@dataclass(frozen=True)
class Command:
    """One ``sam2tune`` command: its name, its typed ``key=value`` arguments (None: Hydra's
    ``run`` grammar), the function that runs it, and its help."""

    name: str
    func: Callable[[list[str]], None]
    args: type | None
    usage: str
    summary: str


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("run", _run, None, "run [key=value ...] [-m]",
                "run SAM 2 experiments from conf/run.yaml (Hydra overrides; -m sweeps "
                "comma-separated values, one isolated run per point)"),
        Command("study", _study, StudyArgs, "study NAME [key=value ...]",
                "run a study from experiments/NAME.py: its sweep, then its report"),
        Command("report", _report, ReportArgs, "report [results_dir=DIR] [out=DIR] [title=TEXT]",
                "HTML + Markdown report (figures, tables, computed conclusions)"),
        Command("download", _download, DownloadArgs,
                "download [MODEL ...] [all=true] [cache_dir=DIR]",
                "fetch Meta's official SAM 2 checkpoints into the cache"),
        Command("predict", tcli.predict_cmd, PredictArgs,
                "predict <run overrides | workload.*=...> [budget=24GiB | gpu=NAME] "
                "[host_budget=64GiB] [format=json]",
                "predicted peak memory term by term, trust region, frames that fit"),
        Command("calibrate", tcli.calibrate_cmd, CalibrateArgs,
                "calibrate [design=calibration|validation] [seed=0] [<run overrides>]",
                "run the memory model's designed calibration / validation set"),
        Command("fit", tcli.fit_cmd, FitArgs,
                "fit [results_dir=DIR] [validation_dir=DIR] [out=FILE]",
                "fit the memory model; error per axis on a validation set"),
        Command("tune", tcli.tune_cmd, TuneArgs,
                "tune budget=24GiB workload.*=... [n_trials=60] [confirm=2]",
                "Optuna search of the knob space (model-screened, confirmed by runs)"),
        Command("recommend", tcli.recommend_cmd, RecommendArgs,
                'recommend [budget=24GiB | gpu="RTX 4090"] workload.*=... [format=json] '
                "[verify=N]",
                "the best configuration for a GPU, why, and a snippet that runs"),
        Command("lookup", tcli.lookup_cmd, LookupArgs,
                "lookup [workload.model=...] [host_budget=64GiB] [out=DIR]",
                "per-GPU lookup table (results/lookup/)"),
    )
}

EXAMPLES = """examples:
  sam2tune run
  sam2tune run model=sam2.1_small model.image_size=512 video.num_frames=60 \\
knobs.offload_video_to_cpu=true
  sam2tune run -m knobs.offload_video_to_cpu=false,true video.num_frames=8,16
  sam2tune study demo
  sam2tune report results_dir=results out=results/report
  sam2tune download sam2.1_tiny"""


def usage() -> str:
    """``sam2tune --help``: every registered command with its one-line summary."""
    lines = ["usage: sam2tune COMMAND [ARGS]", "", "commands:"]
    for c in COMMANDS.values():
        head = f"  {c.usage}"
        text = textwrap.wrap(c.summary, 99 - 32)
        if len(head) <= 30:
            lines.append(head.ljust(32) + text[0])
            text = text[1:]
        else:
            lines.append(head)
        lines += [" " * 32 + t for t in text]
    lines += [
        "  COMMAND --help".ljust(32) + "help of one command (its arguments and defaults)",
        "  --version".ljust(32) + "sam2tune's version",
        "",
        EXAMPLES,
    ]
    return "\n".join(lines)


def command_help(name: str) -> str:
    """``sam2tune COMMAND --help``, generated from the command's typed arguments."""
    c = COMMANDS[name]
    if c.args is None:
        return f"usage: sam2tune {c.usage}\n\n{c.summary}"
    lines = help_lines(c.args, f"sam2tune {c.usage}")
    if name == "study":
        lines += ["", "studies: " + ", ".join(studies())]
    return "\n".join(lines)


def _main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    if argv[0] in ("--version", "-V", "version"):
        print(f"sam2tune {__version__}")
        return
    name, rest = argv[0], argv[1:]
    command = COMMANDS.get(name)
    if command is None:
        _fail(f"unknown command {name!r} (commands: {', '.join(COMMANDS)})")
    if command.args is not None and any(a in ("-h", "--help") for a in rest):
        print(command_help(name))
        return
    try:
        command.func(rest)
    except InputError as e:
        _fail(str(e))
    except BrokenPipeError:  # `sam2tune predict ... | head`: the reader has what it wanted
        raise
    except OSError as e:  # e.g. a read-only results_dir: say which file, no traceback
        _fail(f"{e.filename or name}: {e.strerror or e}")


if __name__ == "__main__":
    main()

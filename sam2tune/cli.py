"""``sam2tune`` command line: subcommands over Hydra configs.

sam2tune run [key=value ...] [-m]     one isolated SAM 2 run per point (Hydra overrides)
sam2tune download [MODEL ...|--all]   fetch Meta's official checkpoints into the cache
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from sam2tune.config.store import CONF_DIR, check_override_keys, config_error_line, register
from sam2tune.errors import InputError
from sam2tune.resources import data_dir

__all__ = ["main"]

USAGE = """usage: sam2tune COMMAND [ARGS]

commands:
  run [key=value ...] [-m]      run SAM 2 experiments from conf/run.yaml (Hydra overrides;
                                -m sweeps comma-separated values, one isolated run per point)
  study NAME [key=value ...]    run a study from experiments/NAME.py: its sweep, then its report
  report [results_dir=DIR] [out=DIR] [title=TEXT]
                                HTML + Markdown report (figures, tables, computed conclusions)
  download [MODEL ...] [all=true] [cache_dir=DIR]
                                fetch Meta's official SAM 2 checkpoints into the cache
  predict <run overrides> [budget=24GiB | gpu=NAME] [host_budget=64GiB] [format=json]
                                predicted peak memory term by term, trust region, frames that fit
  calibrate [design=calibration|validation] [results_dir=DIR] [device=cuda]
                                run the memory model's designed calibration / validation set
  fit [results_dir=DIR] [validation_dir=DIR] [out=FILE]
                                fit the memory model; error per axis on a validation set
  tune budget=24GiB workload.*=... [n_trials=60] [confirm=2]
                                Optuna search of the knob space (model-screened, confirmed by runs)
  recommend [budget=24GiB | gpu="RTX 4090"] workload.*=... [format=json] [verify=N]
                                the best configuration for a GPU, why, and a snippet that runs
  lookup [workload.model=...] [host_budget=64GiB]
                                per-GPU lookup table (results/lookup/)
  COMMAND --help                help of one command
  --version                     sam2tune's version

examples:
  sam2tune run
  sam2tune run model=sam2.1_small model.image_size=512 video.num_frames=60 \
knobs.offload_video_to_cpu=true
  sam2tune run -m knobs.offload_video_to_cpu=false,true video.num_frames=8,16
  sam2tune study demo
  sam2tune report results_dir=results out=results/report
  sam2tune download sam2.1_tiny
"""

STUDIES_DIR = data_dir("experiments")


def _fail(message: str, code: int = 2) -> None:
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
            key = repr(cfg.video)
            if cfg.video.kind != "synthetic" and key not in seen_videos:
                resolve_video(cfg.video, cache_dir(cfg.cache_dir))  # frames decodable to the end
                seen_videos.add(key)
        except InputError as e:
            _fail(f"sweep point {i + 1}/{len(points)} ({label}): {e}; nothing was run")


def _run(overrides: list[str]) -> None:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    try:
        check_override_keys(overrides)
    except InputError as e:
        _fail(str(e))
    _check_group_choices(overrides)
    multirun = "-m" in overrides or "--multirun" in overrides
    if multirun:
        _validate_sweep(overrides)
    elif not any(o.startswith("-") for o in overrides):  # Hydra's flags (--cfg, --info) aside:
        # a bad value in one line, before Hydra's app prints its own page
        from sam2tune.config.store import compose_run

        try:
            compose_run([o for o in overrides if not o.lstrip("+~").startswith("hydra")])
        except InputError as e:
            _fail(str(e))
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
            _fail(str(e))
        print_summary(outcome.row, outcome.report_path)
        return outcome.row

    sys.argv = ["sam2tune run", *overrides]
    started = time.strftime("%Y%m%d-%H%M%S")
    try:
        _main()
    except KeyboardInterrupt:
        if multirun:
            _interrupted_summary(overrides, started)
        raise


def _interrupted_summary(overrides: list[str], started: str) -> None:
    """What an interrupted sweep finished (the rows it recorded since it started)."""
    from collections import Counter

    from sam2tune.results import load_results
    from sam2tune.sweep import sweep_summary

    results = next(
        (o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("results_dir=")),
        "results",
    )
    try:
        df = load_results(results)
        new = df[df["run_id"] >= started] if not df.empty else df
        counts = Counter(new["status"]) if not new.empty else Counter()
    except Exception:
        counts = Counter()
    print(f"interrupted: {sweep_summary(counts)}", file=sys.stderr)


def _download(args: list[str]) -> None:
    """sam2tune download [MODEL ...] [all=true] [cache_dir=DIR]

    Fetch Meta's official SAM 2 checkpoints into the cache (~/.cache/sam2tune/checkpoints, or
    cache_dir=DIR/checkpoints), verified by size and hashed; runs find them there by model name.
    MODEL: any model preset (default sam2.1_tiny); all=true: every preset. (The older spellings
    --all and --cache-dir DIR are accepted too.)"""
    from sam2tune.adapter.checkpoints import DownloadError, download
    from sam2tune.config.presets import model_preset
    from sam2tune.paths import cache_dir

    rest, models = list(args), []
    kv: dict[str, str] = {}
    while rest:
        a = rest.pop(0)
        if a == "--all":
            kv["all"] = "true"
        elif a == "--cache-dir":
            if not rest:
                _fail("download: --cache-dir needs a folder")
            kv["cache_dir"] = rest.pop(0)
        elif "=" in a or a.startswith("-"):
            kv.update(_key_values([a], {"cache_dir", "all"}, "download"))
        else:
            models.append(a)
    if kv.get("all", "false").lower() not in ("true", "false"):
        _fail(f"all: must be true or false, got {kv['all']!r}")
    every = kv.get("all", "").lower() == "true"
    names = _choices("model") if every else (models or ["sam2.1_tiny"])
    root = cache_dir(kv.get("cache_dir"))
    for name in names:
        try:
            m = model_preset(name)
        except InputError as e:
            _fail(str(e))
        print(f"downloading {m.checkpoint_url} -> {root / 'checkpoints'}", file=sys.stderr)
        try:
            path = download(m, root)
        except DownloadError as e:
            _fail(str(e), code=1)
        print(path)


def _key_values(args: list[str], allowed: set[str], command: str) -> dict[str, str]:
    out = {}
    for a in args:
        key, eq, value = a.partition("=")
        if not eq or key not in allowed:
            _fail(
                f"{command}: unexpected argument {a!r} "
                f"(expected {', '.join(sorted(k + '=...' for k in allowed))})"
            )
        out[key] = value
    return out


def _report(args: list[str]) -> None:
    """sam2tune report [results_dir=results] [out=DIR] [title=TEXT]

    HTML + Markdown report of a results folder: environment and provenance, conclusions computed
    from the rows, figures, the run table, unreadable records."""
    from sam2tune.analysis.report import build_report

    kv = _key_values(args, {"results_dir", "out", "title"}, "report")
    results = Path(kv.get("results_dir", "results"))
    if not (results / "runs").is_dir():
        _fail(f"results_dir: no recorded runs under {str(results)!r}")
    out = Path(kv.get("out", str(results / "report")))
    try:
        html_path, md_path = build_report(results, out, title=kv.get("title", "sam2tune report"))
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


def load_study(name: str):
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


def _study(args: list[str]) -> None:
    """sam2tune study NAME [run overrides ...] [results_dir=results/NAME]

    Run a study from experiments/NAME.py: its sweep (isolated runs), then its report."""
    import subprocess

    from sam2tune.analysis.report import build_report

    if not args:
        _fail(f"study: name a study ({', '.join(studies())})")
    name, extra = args[0], args[1:]
    mod = load_study(name)
    results = next(
        (a.split("=", 1)[1] for a in extra if a.startswith("results_dir=")), f"results/{name}"
    )
    extra = [a for a in extra if not a.startswith("results_dir=")]
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
        if rc != 0:
            _fail(f"study {name}: the sweep failed (exit {rc})", code=rc)
    html_path, md_path = build_report(
        results,
        Path(results) / "report",
        title=f"sam2tune study: {mod.TITLE}",
        figures=getattr(mod, "FIGURES", None),
        conclusions=getattr(mod, "conclusions", None),
        intro=getattr(mod, "DESCRIPTION", ""),
    )
    print(f"[study {name}] report: {html_path}\n[study {name}]         {md_path}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"sam2tune: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """The ``sam2tune`` command: one-line warnings and errors, Ctrl-C / SIGTERM cleaned up."""
    import warnings

    warnings.showwarning = _show_warning  # one line per warning, no source lines
    argv = sys.argv[1:] if argv is None else list(argv)
    import signal

    def _terminate(signum, frame):
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


def _command_help(cmd: str) -> None:
    import inspect

    from sam2tune.tune import cli as tcli

    if cmd in tcli.COMMAND_ARGS:
        print(tcli.command_help(cmd))
        return
    funcs = {"report": _report, "study": _study, "download": _download}
    if cmd not in funcs:
        _fail(f"unknown command {cmd!r} (sam2tune --help lists them)")
    print(inspect.getdoc(funcs[cmd]) or f"sam2tune {cmd}")
    if cmd == "study":
        print("\nstudies: " + ", ".join(studies()))


def _main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    if argv[0] in ("--version", "-V", "version"):
        import sam2tune

        print(f"sam2tune {sam2tune.__version__}")
        return
    cmd, rest = argv[0], argv[1:]
    if cmd != "run" and any(a in ("-h", "--help") for a in rest):
        _command_help(cmd)
        return
    if cmd == "run":
        _run(rest)
    elif cmd == "download":
        _download(rest)
    elif cmd == "report":
        _report(rest)
    elif cmd == "study":
        _study(rest)
    elif cmd in ("predict", "fit", "tune", "recommend", "lookup", "calibrate"):
        from sam2tune.tune import cli as tcli

        try:
            getattr(tcli, f"{cmd}_cmd")(rest)
        except InputError as e:
            _fail(str(e))
        except OSError as e:  # e.g. a read-only results_dir: say which file, no traceback
            _fail(f"{e.filename or cmd}: {e.strerror or e}")
    else:
        _fail(
            f"unknown command {cmd!r} (commands: run, study, report, predict, calibrate, fit, "
            "tune, recommend, lookup, download)"
        )


if __name__ == "__main__":
    main()

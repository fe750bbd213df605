"""``sam2tune`` command line: subcommands over Hydra configs.

sam2tune run [key=value ...] [-m]     one isolated SAM 2 run per point (Hydra overrides)
sam2tune download [MODEL ...|--all]   fetch Meta's official checkpoints into the cache
"""

from __future__ import annotations

import argparse
import re
import sys

from sam2tune.config.store import CONF_DIR, register
from sam2tune.errors import InputError

__all__ = ["main"]

USAGE = """usage: sam2tune COMMAND [ARGS]

commands:
  run [key=value ...] [-m]      run SAM 2 experiments from conf/run.yaml (Hydra overrides;
                                -m sweeps comma-separated values, one isolated run per point)
  download [MODEL ...] [--all]  fetch Meta's official SAM 2 checkpoints into the cache

examples:
  sam2tune run
  sam2tune run model=sam2.1_small model.image_size=512 video.num_frames=60 knobs.offload_video_to_cpu=true
  sam2tune run -m knobs.offload_video_to_cpu=false,true video.num_frames=8,16
  sam2tune download sam2.1_tiny
"""


def _fail(message: str, code: int = 2) -> None:
    print(f"sam2tune: error: {message}", file=sys.stderr)
    sys.exit(code)


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _check_group_choices(overrides: list[str]) -> None:
    """One clear line for an unknown config-group option (Hydra's own message is a page)."""
    for ov in overrides:
        m = re.match(r"^[+~]*(model|video|experiment)=(.*)$", ov)
        if not m:
            continue
        group, values = m.groups()
        for value in values.split(","):
            if value and value != "null" and value not in _choices(group):
                _fail(
                    f"{group}: unknown {group} {value!r} (choose from {', '.join(_choices(group))})"
                )


def _run(overrides: list[str]) -> None:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    _check_group_choices(overrides)
    register()

    @hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="run")
    def _main(cfg: DictConfig) -> None:
        from sam2tune.config.schema import RunConfig
        from sam2tune.runner.launcher import run_isolated
        from sam2tune.summary import print_summary

        try:
            run_cfg = OmegaConf.to_object(cfg)
        except Exception as e:  # __post_init__ validation, wrapped by OmegaConf
            cause = e.__cause__ or e
            _fail(str(cause).splitlines()[0])
        assert isinstance(run_cfg, RunConfig)
        try:
            outcome = run_isolated(run_cfg)
        except InputError as e:
            _fail(str(e))
        print_summary(outcome.row, outcome.report_path)

    sys.argv = ["sam2tune run", *overrides]
    _main()


def _download(args: list[str]) -> None:
    from omegaconf import OmegaConf

    from sam2tune.adapter.checkpoints import DownloadError, download
    from sam2tune.config.schema import ModelConfig
    from sam2tune.paths import cache_dir

    ap = argparse.ArgumentParser(prog="sam2tune download", description="fetch SAM 2 checkpoints")
    ap.add_argument("models", nargs="*", default=[], help=f"any of {', '.join(_choices('model'))}")
    ap.add_argument("--all", action="store_true", help="every model preset")
    ap.add_argument("--cache-dir", default=None, help="cache root (default ~/.cache/sam2tune)")
    ns = ap.parse_args(args)
    names = _choices("model") if ns.all else (ns.models or ["sam2.1_tiny"])
    root = cache_dir(ns.cache_dir)
    for name in names:
        if name not in _choices("model"):
            _fail(f"model: unknown model {name!r} (choose from {', '.join(_choices('model'))})")
        m = ModelConfig(
            **OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml"))
        )
        print(f"downloading {m.checkpoint_url} -> {root / 'checkpoints'}", file=sys.stderr)
        try:
            path = download(m, root)
        except DownloadError as e:
            _fail(str(e), code=1)
        print(path)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    if cmd == "run":
        _run(rest)
    elif cmd == "download":
        _download(rest)
    else:
        _fail(f"unknown command {cmd!r} (commands: run, download)")


if __name__ == "__main__":
    main()

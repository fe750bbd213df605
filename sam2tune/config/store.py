"""Registers the config dataclasses in Hydra's ConfigStore (``conf/*.yaml`` pick and fill them)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from hydra.core.config_store import ConfigStore

from sam2tune.config.schema import RunConfig
from sam2tune.resources import data_dir

__all__ = [
    "CONF_DIR",
    "register",
    "compose",
    "compose_run",
    "check_override_keys",
    "check_repeated_keys",
    "config_error_line",
]

#: sam2tune's ``conf/`` (package data in a wheel, the repository's in a checkout)
CONF_DIR = data_dir("conf")


def register() -> None:
    """Register ``run_schema`` (the typed RunConfig) that ``conf/run.yaml`` starts from."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)


def compose(overrides: list[str], return_hydra_config: bool = False):
    """``conf/run.yaml`` composed with ``overrides`` (a DictConfig), outside any Hydra app."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register()
    GlobalHydra.instance().clear()  # `import sam2` initialises Hydra's global state
    with initialize_config_dir(version_base=None, config_dir=str(CONF_DIR)):
        return hydra_compose(
            "run", overrides=list(overrides), return_hydra_config=return_hydra_config
        )


def config_error_line(e: BaseException) -> str:
    """The first line of a config error's message, unwrapped from OmegaConf / Hydra's wrapper
    (``e.__cause__``, e.g. a ``__post_init__`` ValueError, where there is one)."""
    cause = e.__cause__ or e
    lines = str(cause).splitlines()
    line = lines[0] if lines else type(cause).__name__
    lexer = re.match(r"^(?:LexerNoViableAltException|mismatched input|no viable alternative)"
                     r".*?:\s*([\w.+~/]+)=(.*)$", line)
    if lexer:  # Hydra's grammar: a value with spaces or other characters it parses is quoted
        key, value = lexer.groups()
        return (
            f"{key}: {value!r} needs quotes for Hydra's override grammar: in the shell, write "
            f"'{key}=\"{value}\"'"
        )
    key = getattr(cause, "full_key", None) or getattr(e, "full_key", None)  # OmegaConf: apart
    return f"{key}: {line}" if key and not line.startswith(f"{key}:") else line


def compose_run(overrides: list[str]) -> RunConfig:
    """The typed :class:`RunConfig` that ``sam2tune run <overrides>`` would run (validated).

    Raises:
        InputError: an unknown key or a bad value, in one line.
    """
    from omegaconf import OmegaConf

    from sam2tune.errors import InputError

    check_override_keys(list(overrides))
    try:
        cfg = OmegaConf.to_object(compose(overrides))
    except Exception as e:
        raise InputError(config_error_line(e)) from None
    assert isinstance(cfg, RunConfig)
    return cfg


def known_keys() -> set[str]:
    """Every ``key`` a run override may set: RunConfig's fields, dotted."""
    import dataclasses

    keys: set[str] = set()
    for f in dataclasses.fields(RunConfig):
        keys.add(f.name)
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            keys.update(f"{f.name}.{g.name}" for g in dataclasses.fields(sub))
    return keys | {"experiment"}


def check_repeated_keys(overrides: list[str]) -> None:
    """Refuse a key given twice on the command line (Hydra would take the last silently);
    programs composing configs (:func:`compose_run`) keep Hydra's last-wins.

    Raises:
        InputError: the repeated key.
    """
    from sam2tune.errors import InputError

    seen: set[str] = set()
    for ov in overrides:
        if ov.startswith("-") or "=" not in ov:
            continue
        key = ov.split("=", 1)[0].lstrip("+~")
        if key in seen:
            raise InputError(f"{key}: given more than once (which value is meant?)")
        seen.add(key)


def check_override_keys(
    overrides: list[str], also: Sequence[str] = (), command: str = "run"
) -> None:
    """Refuse an unknown key in one line with the closest valid key, with or without ``+``
    (Hydra would print a page without ``+``, and silently add the typo with it). ``also``: the
    command's own argument names, suggested too (``predict frmat=json``: format).

    Raises:
        InputError: the unknown key and the closest valid one.
    """
    import difflib

    from sam2tune.errors import InputError

    known = known_keys()
    for ov in overrides:
        if ov.startswith("-") or "=" not in ov:
            continue
        key = ov.split("=", 1)[0].lstrip("+~")
        if key in known or key.startswith("hydra") or "/" in key:
            continue
        close = difflib.get_close_matches(key, sorted({*known, *also}), n=1, cutoff=0.6)
        hint = (f" (did you mean {close[0]}?)" if close
                else f" (see `sam2tune {command} --help`)")
        raise InputError(f"{key}: unknown setting{hint}")

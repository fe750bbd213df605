"""The ``key=value`` grammar of every command except ``run`` (which is Hydra's own): typed
argument dataclasses, parsed with OmegaConf (types, unknown keys and typos refused in one line
naming the key), and their ``--help`` generated from the same fields."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Any, TypeVar

from sam2tune.config.schema import check_finite
from sam2tune.config.store import config_error_line
from sam2tune.errors import InputError

__all__ = ["arg", "parse", "split_args", "help_lines", "repeated_key"]

T = TypeVar("T")


def arg(
    default: Any,
    text: str,
    factory: Callable[[], Any] | None = None,
    fields: Mapping[str, str] | None = None,
) -> Any:
    """A command argument with its help text (``fields``: help of a nested dataclass's fields,
    shown as ``name.<field>=``)."""
    meta: dict[str, Any] = {"help": text}
    if fields is not None:
        meta["fields"] = dict(fields)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def repeated_key(args: list[str]) -> str | None:
    """The first key given twice (a repeated key is refused rather than the last one winning)."""
    seen: set[str] = set()
    for a in args:
        key = a.split("=", 1)[0].lstrip("+")
        if "=" in a and key in seen:
            return key
        seen.add(key)
    return None


def _check_key(key: str, command: str, cls: type) -> None:
    """Refuse an unknown key, nested ones included (``workload.num_object``), with the closest
    known key of the same level."""
    owner, prefix = cls, ""
    for part in key.split("."):
        fields = {f.name: f for f in dataclasses.fields(owner)}
        if part not in fields:
            said = getattr(cls, "KEY_HINTS", {}).get(key)  # a run key this command spells so
            close = [said] if said else [
                prefix + c for c in difflib.get_close_matches(part, sorted(fields), n=1)]
            hint = (f"did you mean {close[0]}?" if close
                    else f"`sam2tune {command} --help`")
            raise InputError(f"{command}: {key}: unknown argument ({hint})")
        value = fields[part].default_factory  # type: ignore[misc]
        nested = value() if value is not dataclasses.MISSING else None
        if not dataclasses.is_dataclass(nested):
            return  # a plain value: OmegaConf checks its type
        owner, prefix = type(nested), f"{prefix}{part}."


def parse(args: list[str], command: str, cls: type[T]) -> T:
    """Typed arguments of ``command`` from ``key=value`` pairs: unknown keys, bad types and a
    repeated key refused in one line naming the key; then the class's own ``validate()``."""
    from omegaconf import OmegaConf

    # `+key=` / `++key=` as in `sam2tune run` (Hydra's add / force-add): every key here exists
    args = [a.lstrip("+") if "=" in a else a for a in args]
    for a in args:
        if "=" not in a:
            raise InputError(f"{command}: {a}: expected key=value (sam2tune {command} --help)")
    for a in args:
        _check_key(a.split("=", 1)[0], command, cls)
        if not a.split("=", 1)[1].strip():  # `budget=$BUDGET` with the variable unset
            raise InputError(f"{command}: {a.split('=', 1)[0]}: empty value (leave the "
                             "argument out for its default)")
    dup = repeated_key(args)
    if dup is not None:
        raise InputError(f"{command}: {dup}: given more than once")
    try:
        base = OmegaConf.structured(cls)
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(args)))
        ta = OmegaConf.to_object(merged)
    except Exception as e:
        raise InputError(f"{command}: {config_error_line(e)}") from None
    assert isinstance(ta, cls)
    try:
        check_finite(ta)
    except ValueError as e:
        raise InputError(f"{command}: {e}") from None
    validate = getattr(ta, "validate", None)
    if validate is not None:
        validate()
    return ta


def split_args(args: list[str], command: str, cls: type[T]) -> tuple[T, list[str]]:
    """(typed own arguments, the remaining run overrides) for commands that take both."""
    own = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    mine = [a for a in args if a.split("=", 1)[0].lstrip("+").split(".")[0] in own]
    rest = [a for a in args if a.split("=", 1)[0].lstrip("+").split(".")[0] not in own]
    return parse(mine, command, cls), rest


def _row(key: str, value: Any, text: str) -> str:
    v = "null" if value is None else value
    return f"  {key}={v}".ljust(38) + f" {text}"


def help_lines(cls: type, usage: str) -> list[str]:
    """``COMMAND --help``: the usage line, the class's doc, then every field with its default
    and help (a nested dataclass's fields as ``name.<field>=``)."""
    doc = inspect.cleandoc(cls.__doc__ or "").replace("``", "`")
    lines = [f"usage: {usage}", "", doc, "", "arguments (key=value; default shown):"]
    for f in dataclasses.fields(cls):
        nested = f.metadata.get("fields")
        if nested is not None:
            default = f.default_factory()  # type: ignore[misc,operator]
            for name, text in nested.items():
                lines.append(_row(f"{f.name}.{name}", getattr(default, name), text))
            continue
        factory = f.default_factory
        default = factory() if factory is not dataclasses.MISSING else f.default
        lines.append(_row(f.name, default, f.metadata.get("help", "")))
    return lines

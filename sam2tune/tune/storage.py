"""Optuna storages, checked before the first trial: the URL parses, its database kind and driver
are installed, and the server answers within a few seconds (a SQLite file's folder exists).
The study's name is a plain name (it names files under ``results_dir/tune/``)."""

from __future__ import annotations

import re
from pathlib import Path

from sam2tune.errors import InputError

__all__ = ["check_storage", "check_study_name", "CONNECT_TIMEOUT_S"]

CONNECT_TIMEOUT_S = 5
_EXAMPLES = "e.g. sqlite:///tune.db or postgresql+psycopg2://user@host/db"


def check_study_name(name: str | None) -> None:
    """A study name names files (its Pareto plot): letters, digits, ``._-`` and spaces only."""
    if name is None:
        return
    if not name.strip() or not re.fullmatch(r"[\w.\- ]+", name) or set(name) <= {"."}:
        raise InputError(
            f"study_name: {name!r} must be a plain name (letters, digits, '.', '_', '-'; no '/')"
        )


def check_storage(url: str) -> None:
    """``url`` is an Optuna RDB storage this process can open now.

    Raises:
        InputError: one line naming the storage and what to do.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        u = make_url(url)
    except ArgumentError:
        raise InputError(f"storage: {url!r} is not a database URL ({_EXAMPLES})") from None
    shown = u.render_as_string(hide_password=True)
    try:
        dialect = u.get_dialect()
    except NoSuchModuleError:
        raise InputError(
            f"storage: {shown}: unknown database kind {u.drivername!r} ({_EXAMPLES})"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        raise InputError(
            f"storage: {shown}: its driver {e.name or u.drivername!r} is not installed (pip "
            "install it, or name an installed one, e.g. postgresql+psycopg2://)"
        ) from None
    if u.get_backend_name() == "sqlite":
        db = u.database or ""
        if db and db != ":memory:" and not Path(db).expanduser().parent.is_dir():
            raise InputError(
                f"storage: {shown}: the folder {str(Path(db).parent)!r} does not exist"
            )
        return
    engine = create_engine(u, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        with engine.connect():
            pass
    except Exception as e:
        cause = getattr(e, "orig", None) or e
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise InputError(f"storage: cannot connect to {shown} ({first})") from None
    finally:
        engine.dispose()

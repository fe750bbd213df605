"""Where sam2tune's own data lives: the Hydra configs (``conf/``: run config, model presets,
GPU catalog, measured speeds, the shipped memory model) and the studies (``experiments/``).

An installed wheel carries them as package data (``sam2tune/_data/``, read through
:mod:`importlib.resources`); a source checkout (the editable install) reads the repository's own
folders. A user's own configs go on Hydra's search path (``hydra.searchpath``), never here.
"""

from __future__ import annotations

import importlib.resources
from functools import cache
from pathlib import Path

__all__ = ["data_dir"]


@cache
def data_dir(name: str) -> Path:
    """The folder ``name`` (``conf`` or ``experiments``): packaged with the wheel, else the
    source checkout's."""
    packaged = importlib.resources.files("sam2tune") / "_data" / name
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[1] / name

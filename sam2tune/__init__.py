"""sam2tune: memory profiling and auto-tuning benchmark suite for SAM 2 video segmentation.

conf (Hydra) -> one run in an isolated process -> report.json -> results table (pandas)

The public API (imported on first use, so ``import sam2tune`` stays light):

* :func:`recommend` -> :class:`~sam2tune.tune.answer.Recommendation` (the best configuration
  for a GPU and workload, with ``build_predictor`` / ``propagate`` / ``snippet``);
* :func:`build_predictor` and :func:`propagate`: every configuration an answer may choose;
* :func:`load_results`: every recorded run as one flat row (pandas).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "build_predictor", "load_results", "propagate", "recommend"]

_LAZY = {
    "build_predictor": "sam2tune.api",
    "propagate": "sam2tune.api",
    "recommend": "sam2tune.tune.answer",
    "load_results": "sam2tune.results",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sam2tune' has no attribute {name!r}")

"""sam2tune: memory profiling and auto-tuning benchmark suite for SAM 2 video segmentation.

conf (Hydra) -> one run in an isolated process -> report.json -> results table (pandas)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["__version__", "load_results"]

if TYPE_CHECKING:
    import pandas as pd


def load_results(results_dir="results", cache: bool = True, strict: bool = False) -> pd.DataFrame:
    """Every recorded run under ``results_dir`` as one flat row each (see
    :func:`sam2tune.results.load_results`: a missing folder raises, unreadable records are named
    in a warning, or raise with ``strict=True``)."""
    from sam2tune.results import load_results as _load

    return _load(results_dir, cache=cache, strict=strict)

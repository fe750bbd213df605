"""sam2tune: memory profiling and auto-tuning benchmark suite for SAM 2 video segmentation.

conf (Hydra) -> one run in an isolated process -> report.json -> results table (pandas)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_results", "propagate"]

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    import pandas as pd
    import torch


def load_results(results_dir="results", cache: bool = True, strict: bool = False) -> pd.DataFrame:
    """Every recorded run under ``results_dir`` as one flat row each (see
    :func:`sam2tune.results.load_results`: a missing folder raises, unreadable records are named
    in a warning, or raise with ``strict=True``)."""
    from sam2tune.results import load_results as _load

    return _load(results_dir, cache=cache, strict=strict)


def propagate(
    predictor: Any,
    video_path: str,
    prompts: Sequence[Mapping[str, Any]],
    strategy: str = "stock",
    segment_frames: int = 0,
    prefetch: int = 4,
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """SAM 2's ``propagate_in_video`` with sam2tune's memory strategies (``stock`` | ``release``
    | ``stream``): yields ``(frame_idx, obj_ids, mask_logits)``; see
    :func:`sam2tune.api.propagate`."""
    from sam2tune.api import propagate as _propagate

    return _propagate(predictor, video_path, prompts, strategy, segment_frames, prefetch)

"""The implementations sam2tune runs, in one registry: ``impl=<name>`` -> its builder.

Meta's ``sam2`` package and transformers' ``Sam2VideoModel`` (Meta's weights converted by name).
A new implementation registers its builder here; nothing else dispatches on the name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from sam2tune.adapter.build import BuiltPredictor, build_predictor
from sam2tune.adapter.hf import build_hf
from sam2tune.config.schema import KnobsConfig, ModelConfig
from sam2tune.errors import InputError

__all__ = ["IMPLEMENTATIONS", "Builder", "build_impl"]

#: (model preset, knobs, device, cache root) -> the built predictor and its weights' provenance
Builder = Callable[[ModelConfig, KnobsConfig, torch.device, Path], BuiltPredictor]

IMPLEMENTATIONS: dict[str, Builder] = {"sam2": build_predictor, "transformers": build_hf}


def build_impl(
    impl: str, model: ModelConfig, knobs: KnobsConfig, device: torch.device, cache_root: Path
) -> BuiltPredictor:
    """The predictor of implementation ``impl`` for these settings."""
    try:
        builder = IMPLEMENTATIONS[impl]
    except KeyError:
        raise InputError(
            f"impl: unknown implementation {impl!r} (choose from {', '.join(IMPLEMENTATIONS)})"
        ) from None
    return builder(model, knobs, device, cache_root)

"""Model presets from ``conf/model/*.yaml`` as typed configs (outside Hydra's app)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from sam2tune.config.schema import ModelConfig
from sam2tune.config.store import CONF_DIR
from sam2tune.errors import InputError

__all__ = ["model_preset", "model_names"]


def model_names() -> list[str]:
    """The model presets under ``conf/model/``."""
    return sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """The ``conf/model/<name>.yaml`` preset as a typed config (``overrides`` on top).

    Raises:
        InputError: unknown preset (one line naming the choices).
    """
    if name not in model_names():
        raise InputError(f"model: unknown model {name!r} (choose from {', '.join(model_names())})")
    d = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml"))
    assert isinstance(d, dict)
    return ModelConfig(**{str(k): v for k, v in d.items()}, **overrides)

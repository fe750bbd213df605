"""Model presets from ``conf/model/*.yaml`` as typed configs (outside Hydra's app)."""

from __future__ import annotations

from omegaconf import OmegaConf

from sam2tune.config.schema import ModelConfig
from sam2tune.config.store import CONF_DIR
from sam2tune.errors import InputError

__all__ = ["model_preset", "model_names"]


def model_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def model_preset(name: str, **overrides) -> ModelConfig:
    if name not in model_names():
        raise InputError(f"model: unknown model {name!r} (choose from {', '.join(model_names())})")
    d = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml"))
    d.update(overrides)
    return ModelConfig(**d)

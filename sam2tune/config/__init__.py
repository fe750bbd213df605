"""Configuration: typed dataclasses composed by Hydra from ``conf/``."""

from sam2tune.config.schema import (
    KnobsConfig,
    LimitsConfig,
    ModelConfig,
    ProbeConfig,
    RunConfig,
    ScenarioConfig,
    VideoConfig,
    config_hash,
)

__all__ = [
    "KnobsConfig",
    "LimitsConfig",
    "ModelConfig",
    "ProbeConfig",
    "RunConfig",
    "ScenarioConfig",
    "VideoConfig",
    "config_hash",
]

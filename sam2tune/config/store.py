"""Registers the config dataclasses in Hydra's ConfigStore (``conf/*.yaml`` pick and fill them)."""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore

from sam2tune.config.schema import RunConfig

__all__ = ["CONF_DIR", "register"]

#: the repository's ``conf/`` folder (the package is installed editable from the repository)
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def register() -> None:
    """Register ``run_schema`` (the typed RunConfig) that ``conf/run.yaml`` starts from."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)

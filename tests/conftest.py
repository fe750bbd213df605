"""Shared fixtures: compose the real Hydra configs, shrunk to CPU / tiny / 256 px."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sam2tune.config.schema import RunConfig
from sam2tune.config.store import CONF_DIR, register

REPO = Path(__file__).resolve().parents[1]
SAM2TUNE = str(REPO / ".venv" / "bin" / "sam2tune")


def compose_run(overrides: list[str]) -> RunConfig:
    """The RunConfig that ``sam2tune run <overrides>`` would use."""
    register()
    GlobalHydra.instance().clear()  # `import sam2` initialises Hydra's global state
    with initialize_config_dir(version_base=None, config_dir=str(CONF_DIR)):
        cfg = compose("run", overrides=overrides)
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    """One cache (generated videos) for the whole session."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def small(cache_root, tmp_path):
    """Compose a small CPU run config: tiny model, 256 px, a few frames, results under tmp."""

    def make(*overrides: str, results: Path | None = None) -> RunConfig:
        base = [
            "device=cpu",
            "model.image_size=256",
            "video.num_frames=6",
            "video.height=120",
            "video.width=160",
            f"results_dir={results or tmp_path / 'results'}",
            f"cache_dir={cache_root}",
        ]
        return compose_run(base + list(overrides))

    return make


@pytest.fixture(scope="session")
def has_cuda() -> bool:
    return torch.cuda.is_available()


def sam2tune_cmd() -> list[str]:
    return [SAM2TUNE] if os.path.exists(SAM2TUNE) else [sys.executable, "-m", "sam2tune"]


SMALL_RUN = ["device=cpu", "video.num_frames=3", "video.height=64", "video.width=64"]


def small_run_cmd(cache_root, results, prefix: list[str] | None = None) -> list[str]:
    """``sam2tune run`` on a tiny CPU video (3 frames, 64x64) into ``results``."""
    return (prefix or sam2tune_cmd()) + [
        "run", *SMALL_RUN, f"cache_dir={cache_root}", f"results_dir={results}"
    ]


#: plausible memory-model coefficients for tests that need a model without fitting one
MODEL_COEFFS = {
    "a_enc": 2.75,
    "a_q": 150.0,
    "a_out": 10.0,
    "c_feat": 100.0,
    "h_0": 2.5e8,
    "h_act": 0.2,
    "h_px": 0.0,
}

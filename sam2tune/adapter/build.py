"""Build SAM 2's video predictor the way ``sam2.build_sam.build_sam2_video_predictor`` does,
without Hydra's global state (which that function needs and which ``@hydra.main`` owns).

The packaged YAML is loaded with OmegaConf, the same ``++model.*`` overrides are applied, and the
model is instantiated with ``hydra.utils.instantiate``. The override list is returned too, so a
recommendation can print the equivalent ``hydra_overrides_extra``.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from sam2tune.adapter.checkpoints import load_state_dict, resolve_checkpoint
from sam2tune.errors import InputError

if TYPE_CHECKING:
    import torch

    from sam2tune.config.schema import KnobsConfig, ModelConfig

__all__ = [
    "BuiltPredictor",
    "build_predictor",
    "sam2_overrides",
    "predictor_target",
]

# what build_sam2_video_predictor adds with apply_postprocessing=True
_POSTPROCESSING = [
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
    "++model.fill_hole_area=8",
]


#: SAM 2's ``SAM2VideoPredictor`` (an ``nn.Module``; sam2 ships no type information, so its
#: attributes - ``num_maskmem``, ``init_state``, ... - are typed as Any)
Predictor = Any


@dataclass
class BuiltPredictor:
    """A built SAM 2 video predictor and where its weights came from."""
    predictor: Predictor
    weights: str  # "random-init" or "sha256:<hex>"
    checkpoint_path: str | None
    weights_bytes: int
    overrides: list[str]  # our hydra_overrides_extra (without SAM 2's own target/postprocessing)


def predictor_target(knobs: KnobsConfig) -> str:
    """SAM 2's predictor class for these knobs (validates the combination)."""
    if knobs.vos_optimized:
        if knobs.predictor != "per_object":
            raise InputError("knobs.vos_optimized: only available with knobs.predictor=per_object")
        return "sam2.sam2_video_predictor.SAM2VideoPredictorVOS"
    if knobs.predictor == "legacy_batched":
        return "sam2.sam2_video_predictor_legacy.SAM2VideoPredictor"
    return "sam2.sam2_video_predictor.SAM2VideoPredictor"


def sam2_overrides(model: ModelConfig, knobs: KnobsConfig) -> list[str]:
    """The ``hydra_overrides_extra`` a SAM 2 user passes for these settings."""
    ov = [f"++model.image_size={model.image_size}"]
    if knobs.max_cond_frames_in_attn != -1:
        ov.append(f"++model.max_cond_frames_in_attn={knobs.max_cond_frames_in_attn}")
    return ov


def needs_own_predictor(
    model: ModelConfig,
    knobs: KnobsConfig,
    ref_model: ModelConfig,
    ref_knobs: KnobsConfig,
    impl: str = "sam2",
) -> bool:
    """Whether a predictor built for (``model``, ``knobs``, ``impl``) cannot serve
    (``ref_model``, ``ref_knobs``) on Meta's sam2: another implementation, a different class,
    compiled encoder, build-time override or model. The other knobs (offloads, strategy, dtype,
    segments) act at ``init_state`` / propagation time."""
    return (
        impl != "sam2"
        or predictor_target(knobs) != predictor_target(ref_knobs)
        or knobs.vos_optimized != ref_knobs.vos_optimized
        or sam2_overrides(model, knobs) != sam2_overrides(ref_model, ref_knobs)
        or model != ref_model
    )


def _apply(cfg, override: str) -> None:
    from omegaconf import OmegaConf

    key, _, value = override.lstrip("+").partition("=")
    OmegaConf.update(cfg, key, yaml.safe_load(value), force_add=True)


def build_predictor(
    model: ModelConfig, knobs: KnobsConfig, device: torch.device, cache_root
) -> BuiltPredictor:
    """Instantiate the configured video predictor on ``device`` with real or random-init weights.

    Random-init weights are drawn from ``model.weights_seed`` so every run of the same config
    gets the same weights (runs stay comparable; masks are not meaningful).

    Raises:
        InputError: unknown packaged config, or a checkpoint that does not match the model.
    """
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    res = importlib.resources.files("sam2") / model.config_file
    if not res.is_file():
        raise InputError(f"model.config_file: {model.config_file!r} is not in the sam2 package")
    cfg = OmegaConf.create(res.read_text())  # OmegaConf's YAML loader reads 1e-6 as a float
    ours = sam2_overrides(model, knobs)
    overrides = [f"++model._target_={predictor_target(knobs)}"]
    if knobs.vos_optimized:
        overrides.append("++model.compile_image_encoder=True")
    overrides += ours + _POSTPROCESSING
    for ov in overrides:
        _apply(cfg, ov)
    OmegaConf.resolve(cfg)
    ckpt = resolve_checkpoint(model, cache_root)
    torch.manual_seed(model.weights_seed)
    predictor = instantiate(cfg.model, _recursive_=True)
    weights = "random-init"
    if ckpt is not None:
        weights = load_state_dict(predictor, ckpt, model.name)
    predictor = predictor.to(device).eval()
    nbytes = sum(p.numel() * p.element_size() for p in predictor.parameters())
    nbytes += sum(b.numel() * b.element_size() for b in predictor.buffers())
    return BuiltPredictor(predictor, weights, str(ckpt) if ckpt else None, int(nbytes), ours)


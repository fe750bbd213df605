"""SAM 2 architecture constants the memory model needs, read from the packaged configs and
SAM 2's own defaults (the adapter is the one place that knows SAM 2)."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml

__all__ = ["Arch", "arch_of", "arch_of_predictor", "horizon_back"]


def horizon_back(num_maskmem: int, max_obj_ptrs: int, stride: int) -> int:
    """How many frames back forward propagation still reads non-conditioning outputs.

    ``_prepare_memory_conditioned_features`` reads the maskmem of the previous frame and of
    ``num_maskmem - 2`` more frames every ``stride`` frames (the oldest at most
    ``1 + (num_maskmem - 2) * stride`` frames back) and the object pointers of the last
    ``max_obj_ptrs_in_encoder - 1`` frames.
    """
    return max(max_obj_ptrs - 1, 1 + (num_maskmem - 2) * stride)


@dataclass(frozen=True)
class Arch:
    """What sizes SAM 2's per-step tensors (``sam2_base.py``, ``memory_attention.py``)."""

    embed_dim: (
        int  # Hiera trunk's first-stage channels: the image encoder's activations scale with it
    )
    num_maskmem: int = 7  # memory frames: the current one + num_maskmem - 1 previous
    max_obj_ptrs: int = 16  # object pointers read: selected past conditioning frames + 15 previous
    mem_dim: int = 64  # memory-bank channels (maskmem_features, bf16)
    d_model: int = 256  # memory attention width; a pointer is d_model / mem_dim = 4 memory tokens
    temporal_stride: int = 1  # memory_temporal_stride_for_eval

    @property
    def ptr_tokens(self) -> int:
        """Memory tokens one object pointer takes (d_model / mem_dim)."""
        return self.d_model // self.mem_dim

    @property
    def horizon_back(self) -> int:
        """Frames back that forward propagation still reads (see :func:`horizon_back`)."""
        return horizon_back(self.num_maskmem, self.max_obj_ptrs, self.temporal_stride)

    @property
    def token_bytes(self) -> int:
        """Bytes one memory token costs at the memory-attention peak (float32), from the code:
        ``memory_attention.py`` / ``RoPEAttention``: k_proj and v_proj outputs (d_model each),
        the rotary frequencies repeated over the memory and the rotated keys (d_model each), the
        keys' input memory + pos (mem_dim); ``_prepare_memory_conditioned_features``: the
        concatenated memory and positional encodings and the per-frame encodings (mem_dim each).
        4 x (4 x 256 + 4 x 64) = 5,120 B."""
        return 4 * (4 * self.d_model + 4 * self.mem_dim)


@cache
def arch_of(config_file: str) -> Arch:
    """The architecture of a packaged SAM 2 config (e.g.
    ``configs/sam2.1/sam2.1_hiera_t.yaml``), without building the model."""
    text = (importlib.resources.files("sam2") / config_file).read_text()
    m = yaml.safe_load(text)["model"]
    trunk = m["image_encoder"]["trunk"]
    return Arch(
        embed_dim=int(trunk.get("embed_dim", 96)),
        num_maskmem=int(m.get("num_maskmem", 7)),
        max_obj_ptrs=int(m.get("max_obj_ptrs_in_encoder", 16)),
        mem_dim=int(m.get("memory_encoder", {}).get("out_dim", 64)),
        d_model=int(m.get("memory_attention", {}).get("d_model", 256)),
        temporal_stride=int(m.get("memory_temporal_stride_for_eval", 1)),
    )


def arch_of_predictor(predictor: Any) -> Arch:
    """The same constants read from a built predictor (what the session actually runs)."""
    return Arch(
        embed_dim=int(predictor.image_encoder.trunk.patch_embed.proj.out_channels),
        num_maskmem=int(predictor.num_maskmem),
        max_obj_ptrs=int(predictor.max_obj_ptrs_in_encoder),
        mem_dim=int(predictor.mem_dim),
        d_model=int(predictor.hidden_dim),
        temporal_stride=int(predictor.memory_temporal_stride_for_eval),
    )

"""Census of SAM 2's inference state by role, in bytes.

Roles (see SAM2_NOTES.md): ``frames`` (``inference_state["images"]``), ``cached_features``
(``inference_state["cached_features"]``) and ``state`` (everything else: per-object outputs,
prompts, constants). Storages are counted once (views and slices share them).

``*_device_bytes`` are the bytes that live on the compute device under the run's knobs, following
SAM 2's own placement: frames go to the host with ``offload_video_to_cpu``; ``maskmem_features``
and ``pred_masks`` go to ``storage_device`` (the host with ``offload_state_to_cpu``) while object
pointers and scores always stay on the device. On a CUDA run the same split is read from the
tensors themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Census", "take_census", "walk_tensors"]

_STORAGE_KEYS = ("maskmem_features", "pred_masks")


@dataclass
class Census:
    """Inference-state bytes by role, and how much of each sits on the compute device."""
    frames_bytes: int = 0
    state_bytes: int = 0
    cached_features_bytes: int = 0
    frames_device_bytes: int = 0
    state_device_bytes: int = 0
    maskmem_bytes: int = 0  # of state_bytes: memory-bank features (bf16)
    maskmem_entries: int = 0  # object-frames holding maskmem features
    # of cached_features_bytes: kept on the host (transformers' offloaded state)
    cached_features_host_bytes: int = 0

    @property
    def device_resident_bytes(self) -> int:
        """Inference-state bytes on the compute device (weights and activations excluded)."""
        return (
            self.frames_device_bytes
            + self.state_device_bytes
            + self.cached_features_bytes
            - self.cached_features_host_bytes
        )


def walk_tensors(
    obj: Any, key: str, seen: set[int], out: list[tuple[str, torch.Tensor]]
) -> None:
    """Every tensor under ``obj`` whose storage is not in ``seen`` yet, as (the nearest string
    key above it, tensor), appended to ``out`` (views and slices share a storage: counted once).
    """
    if isinstance(obj, torch.Tensor):
        st = obj.untyped_storage()
        ptr = st.data_ptr()
        if ptr and ptr not in seen:
            seen.add(ptr)
            out.append((key, obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            walk_tensors(v, k if isinstance(k, str) else key, seen, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            walk_tensors(v, key, seen, out)


def _frames(images: Any) -> list[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        return [images]
    # AsyncVideoFrameLoader keeps a list of loaded frames
    return [t for t in getattr(images, "images", []) if isinstance(t, torch.Tensor)]


def take_census(state: dict, offload_video: bool, offload_state: bool) -> Census:
    """Count the inference state's bytes by role and by where the knobs put them."""
    c = Census()
    cpu_device = state["device"].type == "cpu"
    seen: set[int] = set()
    for t in _frames(state["images"]):
        n = t.untyped_storage().nbytes()
        seen.add(t.untyped_storage().data_ptr())
        c.frames_bytes += n
        if (not offload_video) if cpu_device else t.device.type != "cpu":
            c.frames_device_bytes += n
    cached: list[tuple[str, torch.Tensor]] = []
    walk_tensors(state["cached_features"], "cached_features", seen, cached)
    c.cached_features_bytes = sum(t.untyped_storage().nbytes() for _, t in cached)
    rest: list[tuple[str, torch.Tensor]] = []
    for k, v in state.items():
        if k not in ("images", "cached_features"):
            walk_tensors(v, k, seen, rest)
    for key, t in rest:
        n = t.untyped_storage().nbytes()
        c.state_bytes += n
        if key == "maskmem_features":
            c.maskmem_bytes += n
            c.maskmem_entries += t.shape[0] if t.dim() else 1
        if cpu_device:
            on_device = not (offload_state and key in _STORAGE_KEYS)
        else:
            on_device = t.device.type != "cpu"
        if on_device:
            c.state_device_bytes += n
    return c

"""The run process's resource limits: a host-memory budget (RLIMIT_DATA) and an emulated
smaller GPU (the caching allocator's per-process fraction)."""

from __future__ import annotations

import resource

import torch

__all__ = ["apply_device_budget", "lift_limits"]


def apply_device_budget(dev: torch.device, budget: int | None) -> None:
    """Cap PyTorch's allocator on ``dev`` at ``budget`` bytes (no-op without CUDA or budget)."""
    if dev.type != "cuda" or not budget:
        return
    total = torch.cuda.get_device_properties(dev).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total), dev.index or 0)


def lift_limits(dev: torch.device | None = None) -> None:
    """Lift the run's own limits (recording a failure, or the reference run, is not under the
    run's budget)."""
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (hard, hard))
    if dev is not None and dev.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(1.0, dev.index or 0)

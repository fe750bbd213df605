"""Where a figure came from: software versions, code commit, machine, device."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["environment", "cpu_name", "git_commit"]


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``, else the platform's)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The sam2tune checkout's commit (with ``-dirty`` when it has uncommitted changes)."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if sha.returncode != 0:
            # a copy of the tree without .git (e.g. shipped to a GPU machine): the shipper says
            return os.environ.get("SAM2TUNE_COMMIT") or None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("SAM2TUNE_COMMIT") or None


def environment(device: Any = None) -> dict[str, Any]:
    """Versions, commit, machine and (when given a torch device) accelerator details."""
    import psutil

    env: dict[str, Any] = {
        "sam2tune": _version("sam2tune"),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "sam2": _version("sam2"),
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "hostname": platform.node(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "host_memory_bytes": int(psutil.virtual_memory().total),
        # allocator settings of this process (the run process fixes glibc's; see launcher)
        "allocator_env": {
            k: v
            for k, v in sorted(os.environ.items())
            if k.startswith("MALLOC_") or k == "PYTORCH_CUDA_ALLOC_CONF"
        },
    }
    if device is not None:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        env["device"] = str(device)
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            env["device_name"] = props.name
            env["device_memory_bytes"] = int(props.total_memory)
            env["cuda"] = torch.version.cuda
            # usable memory at start: total minus the CUDA context and anything else resident
            free, total = torch.cuda.mem_get_info(device)
            env["cuda_free_at_start_bytes"] = int(free)
            env["cuda_total_bytes"] = int(total)
            try:
                import pynvml

                pynvml.nvmlInit()
                env["driver"] = pynvml.nvmlSystemGetDriverVersion()
            except Exception as e:  # NVML missing or not permitted: say so
                env["driver"] = f"unavailable ({e})"
        else:
            env["device_name"] = cpu_name()
            env["driver"] = None
    return env

"""Measurement probes: live-tensor tracking, host RSS, CUDA allocator and NVML figures.

Light probes (per-frame census, RSS read, CUDA allocator counters) run on every frame and stay
within the fps budget. The heavy one, :class:`TensorTracker`, records every tensor storage that
is allocated while it is active and when it is freed, giving the step's activation peak on any
device (CPU included); it costs ~40 % of the tracked frames' time, so those frames are left out
of fps.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
import weakref

import psutil
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["TensorTracker", "peak_rss_bytes", "rss_bytes", "NvmlSampler"]


class TensorTracker(TorchDispatchMode):
    """Tracks the bytes of tensor storages allocated under it and still alive.

    ``begin_step()`` marks a step; ``step_peaks`` collects, per step, the peak of live tracked
    bytes above the level at the step's start (the step's transient / activation peak).
    Storages that alias an op's inputs (views, in-place results) are not new allocations and
    are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self._base = 0
        self._step_peak = 0
        self.step_peaks: list[int] = []
        self._known: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def _free(self, n: int) -> None:
        self.live -= n

    def begin_step(self) -> None:
        """Close the previous step (recording its peak) and start a new one at the live level."""
        self._close_step()
        self._base = self.live
        self._step_peak = self.live

    def _close_step(self) -> None:
        if self._step_peak:
            self.step_peaks.append(self._step_peak - self._base)
        self._step_peak = 0

    def end(self) -> None:
        """Close the last step (recording its peak)."""
        self._close_step()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor) and t.device.type != "meta"
        }
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            st = t.untyped_storage()
            if st.data_ptr() in inputs or st in self._known:
                continue
            n = st.nbytes()
            self._known[st] = n
            weakref.finalize(st, self._free, n)
            self.live += n
            if self.live > self._step_peak:
                self._step_peak = self.live
        return out


_PROC = psutil.Process(os.getpid())


def rss_bytes() -> int:
    """Current resident set size of this process."""
    return int(_PROC.memory_info().rss)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process's own memory since it started: the kernel's
    ``VmHWM`` (/proc/self/status, exact). Not ``ru_maxrss``: Linux carries the parent's
    high-water mark into it across fork + exec, so a run started from a large process (a
    notebook, a test session, a tuner holding models) would record the parent's RSS as its own
    (measured: a child of a 3 GiB parent read 3099 MiB by ru_maxrss, 13 MiB by VmHWM).
    Elsewhere (macOS) ``ru_maxrss`` (bytes there)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak if sys.platform == "darwin" else peak * 1024


class NvmlSampler:
    """Samples NVML memory in the background: this process's use and the whole device's."""

    def __init__(self, device_index: int, interval_s: float = 0.01) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nv = pynvml
        self._h = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        self.driver = pynvml.nvmlSystemGetDriverVersion()
        self.peak_process = 0
        self.peak_device = 0
        self._stop = threading.Event()
        self._interval = interval_s
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        nv, pid = self._nv, os.getpid()
        self.peak_device = max(self.peak_device, int(nv.nvmlDeviceGetMemoryInfo(self._h).used))
        for p in nv.nvmlDeviceGetComputeRunningProcesses(self._h):
            if p.pid == pid and p.usedGpuMemory:
                self.peak_process = max(self.peak_process, int(p.usedGpuMemory))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self._interval)

    def __enter__(self) -> NvmlSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

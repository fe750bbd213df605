"""The GPU catalog and the one rule for how much of a GPU's memory SAM 2's tensors may take.

Every answer that compares a prediction with a GPU (``predict budget=`` / ``gpu=``,
``recommend``, ``tune``, the lookup table and its page, the projection figure) calls
:func:`usable_memory`, so two commands never disagree on whether a configuration fits.

The rule, as PyTorch's CUDA memory behaves (measured on the committed H200 records):

    total = CUDA context + allocated peak + allocator headroom(allocated peak)
    headroom(p) = min(ratio x p, cap)

* the CUDA context (and the libraries' kernels loaded later) lies outside the caching allocator:
  NVML's process figure minus the allocator's reserved bytes, the largest seen;
* the allocator reserves more than it hands out (``max_memory_reserved - max_memory_allocated``):
  on small runs up to 48 % more, but in absolute terms never more than a few hundred MiB whatever
  the peak (1.48x at 0.8 GiB, 1.03x at 9.6 GiB; 384 MiB at most). One multiplier (the old rule)
  threw away a quarter of a large GPU; the envelope ``min(ratio x p, cap)`` bounds every
  recorded run and costs an 80 GB GPU 384 MiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from sam2tune.config.store import CONF_DIR
from sam2tune.errors import InputError
from sam2tune.units import fmt_bytes, gb_to_bytes, parse_bytes

__all__ = [
    "Gpu",
    "catalog",
    "catalog_entries",
    "detect_gpu",
    "resolve_budget",
    "Headroom",
    "fit_headroom",
    "headroom_of",
    "usable_memory",
    "CUDA_CONTEXT_DEFAULT",
]


@dataclass(frozen=True)
class Gpu:
    """A catalog GPU: its memory as the vendor states it (bytes, converted once) and where that
    figure is stated."""

    name: str
    total_bytes: int
    source: str


def catalog_entries() -> list[Gpu]:
    """Every GPU of ``conf/gpus.yaml``, in the file's order."""
    raw = yaml.safe_load((CONF_DIR / "gpus.yaml").read_text())
    out = []
    for name, v in raw.items():
        gb, src = (v["gb"], v["source"]) if isinstance(v, dict) else (v, "unsourced")
        out.append(Gpu(str(name), gb_to_bytes(float(gb)), str(src)))
    return out


def catalog() -> dict[str, int]:
    """GPU name -> memory in bytes (vendor GB converted once, in gb_to_bytes)."""
    return {g.name: g.total_bytes for g in catalog_entries()}


def detect_gpu() -> tuple[str, int]:
    """The local GPU through NVML (name, total bytes)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(h)
        name = name.decode() if isinstance(name, bytes) else name
        return str(name), int(pynvml.nvmlDeviceGetMemoryInfo(h).total)
    except Exception as e:
        raise InputError(
            f"budget: no budget or gpu given and no GPU detected through NVML ({e}); "
            'pass budget=24GiB or gpu="RTX 4090"'
        ) from None


#: what nvidia-smi and torch.cuda.get_device_name put before the catalog's names
_VENDOR_WORDS = ("nvidia", "geforce", "tesla", "quadro")


def _words(name: str) -> list[str]:
    """A GPU name's words, lower case, vendor words dropped, dashes as spaces."""
    return [x for x in name.lower().replace("-", " ").split() if x not in _VENDOR_WORDS]


def _entry(gpu: str) -> Gpu | None:
    """The catalog's entry for ``gpu`` given as the catalog, nvidia-smi or torch spell it
    ("NVIDIA GeForce RTX 4090", "Tesla T4", "rtx 4090"), or None when it is not one."""
    mine = _words(str(gpu))
    return next((g for g in catalog_entries() if _words(g.name) == mine), None)


def canonical_gpu(gpu: str) -> str | None:
    """The catalog's name for ``gpu`` (:func:`_entry`), or None when it is not one."""
    g = _entry(gpu)
    return g.name if g else None


def _suggest(gpu: str) -> str:
    """The catalog names ``gpu`` is part of (``H100``: H100 80GB, H100 NVL), else the closest,
    else the whole catalog."""
    import difflib

    names = [x.name for x in catalog_entries()]
    words = _words(gpu)
    # "H100": H100 80GB and H100 NVL; "A100-SXM4-80GB" (torch's name): A100 80GB
    part = [n for n in names if words and (all(w in _words(n) for w in words)
                                           or all(w in words for w in _words(n)))]
    close = part or difflib.get_close_matches(gpu, names, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(n) for n in close) + "?"
    return ", ".join(names)


def resolve_budget(budget: str | None, gpu: str | None) -> tuple[int, str]:
    """Bytes and a description: an explicit budget, a catalog GPU, or the local GPU.

    Raises:
        InputError: a malformed size, an unknown GPU (naming the catalog), or nothing given and
            no GPU detected.
    """
    if budget is not None and gpu is not None:
        raise InputError("budget: give budget= or gpu=, not both")
    if budget is not None:
        try:
            b = parse_bytes(budget, name="budget")
        except ValueError as e:
            raise InputError(str(e)) from None
        if b is None:
            raise InputError("budget: give a size such as 24GiB")
        return b, f"budget {fmt_bytes(b)}"
    if gpu is not None:
        g = _entry(gpu)
        if g is None:
            raise InputError(f"gpu: {gpu!r} is not in the catalog conf/gpus.yaml "
                             f"({_suggest(str(gpu))})")
        return g.total_bytes, f"{g.name} ({g.total_bytes / 1e9:g} GB = {fmt_bytes(g.total_bytes)})"
    name, total = detect_gpu()
    return total, f"{name} (detected, {fmt_bytes(total)})"


#: until a CUDA run is recorded: the CUDA context PyTorch creates (assumed, not measured)
CUDA_CONTEXT_DEFAULT = 512 * 2**20
@dataclass(frozen=True)
class Headroom:
    """The allocator's headroom ``min(ratio x peak, cap_bytes)`` and how well it bounds the runs
    it was fitted on (bytes: predicted - measured over those runs)."""

    ratio: float
    cap_bytes: int
    runs: int
    max_under_bytes: int  # the most it under-predicts any run (0: it bounds every run)
    median_over_bytes: int  # the median over-prediction (memory given away)
    source: str

    def of(self, peak: int) -> int:
        """Headroom in bytes at an allocated peak of ``peak`` bytes."""
        return int(min(self.ratio * peak, self.cap_bytes))


#: until a CUDA run is recorded: headroom up to 50 % of the peak, at most 512 MiB (assumed)
HEADROOM_DEFAULT = Headroom(
    ratio=0.5, cap_bytes=512 * 2**20, runs=0, max_under_bytes=0, median_over_bytes=0,
    source="assumed: no CUDA run recorded yet",
)


def fit_headroom(pairs: list[tuple[int, int]], source: str) -> Headroom:
    """The envelope ``min(ratio x allocated, cap)`` of (allocated, reserved) peaks: the largest
    reserved:allocated excess ratio and the largest absolute excess seen."""
    import numpy as np

    ok = [(a, r) for a, r in pairs if a and r and r >= a]
    if not ok:
        raise ValueError("fit_headroom: no CUDA run with allocated and reserved peaks")
    a = np.array([p[0] for p in ok], float)
    ex = np.array([p[1] - p[0] for p in ok], float)
    ratio, cap = float(np.max(ex / a)), int(np.max(ex))
    pred = np.minimum(ratio * a, cap)
    return Headroom(
        ratio=ratio,
        cap_bytes=cap,
        runs=len(ok),
        max_under_bytes=int(max(0.0, float(np.max(ex - pred)))),
        median_over_bytes=int(np.median(pred - ex)),
        source=source,
    )


def headroom_of(model: Any) -> tuple[Headroom, int, str]:
    """The headroom rule, the CUDA context in bytes and where the context figure comes from, as
    recorded in a memory model's CUDA calibration (assumed defaults without one)."""
    cal = (getattr(model, "calibration", None) or {}).get("cuda", {})
    h = cal.get("cuda_headroom")
    head = Headroom(**h) if h else HEADROOM_DEFAULT
    ctx = cal.get("cuda_context_bytes")
    ctx_src = str(cal.get("cuda_context_source") or "measured on CUDA runs") if ctx else (
        "assumed: no CUDA run recorded yet"
    )
    return head, int(ctx or CUDA_CONTEXT_DEFAULT), ctx_src


def usable_memory(total: int, model: Any, device_kind: str = "cuda") -> tuple[int, str]:
    """The largest allocated peak that fits a GPU of ``total`` bytes, and the rule in one line.

    ``total = context + p + min(ratio x p, cap)`` solved for ``p``; on ``device_kind=cpu`` the
    budget is taken whole (no CUDA deductions).
    """
    if device_kind != "cuda":
        why = f"device_kind={device_kind}: no CUDA deductions"
        return int(total), f"usable {fmt_bytes(total)} ({why})"
    head, ctx, ctx_src = headroom_of(model)
    room = max(0, total - ctx)
    p = room / (1.0 + head.ratio)
    if head.ratio * p > head.cap_bytes:  # past the cap the headroom is a constant
        p = room - head.cap_bytes
    usable = max(0, int(p))
    return usable, (
        f"usable {fmt_bytes(usable)} = {fmt_bytes(total)} - CUDA context {fmt_bytes(ctx)} "
        f"[{ctx_src}] - allocator headroom {fmt_bytes(head.of(usable))} "
        f"(min({head.ratio:.2f} x peak, {fmt_bytes(head.cap_bytes)}) [{head.source}])"
    )

"""What SAM 2's memory attention reads at a step: the memory frames (SAM 2's own selection of
conditioning and recent frames), object pointers and tokens; sizes of what it keeps per frame."""

from __future__ import annotations

import bisect
from functools import cache, lru_cache
from typing import TYPE_CHECKING

from sam2tune.memory_model.workload import Candidate, Workload

if TYPE_CHECKING:
    pass

STREAM_WINDOW = 2


@cache
def _arch(model: str):
    from sam2tune.adapter.arch import arch_of
    from sam2tune.config.presets import model_preset

    return arch_of(model_preset(model).config_file)


def _sizes(S: int, mem_dim: int = 64, es: int = 4) -> dict[str, int]:
    """Exact tensor sizes at input size ``S``; ``es`` = bytes per element of what an
    implementation stores in the session's dtype (transformers in bfloat16: 2)."""
    t = (S // 16) ** 2
    return {
        "frame": 3 * S * S * es,
        "maskmem": mem_dim * t * 2,
        "masks": (S // 4) ** 2 * es,
        "ptr": 256 * es + es,
        "pos_enc": mem_dim * t * es,
        "tokens": t,
        # transformers only: each object-frame's output keeps its high-resolution mask logits
        "high_res": S * S * es,
        # transformers only: one frame's cached vision features (the three FPN levels after
        # conv_s0 / conv_s1: 32, 64, 256 channels) and their positional encodings (256 each)
        "hf_features": (
            (S // 4) ** 2 * 32 + (S // 8) ** 2 * 64 + t * 256
            + 256 * ((S // 4) ** 2 + (S // 8) ** 2 + t)
        ) * es,
    }


def _es(c: Candidate) -> int:
    """Bytes per element an implementation stores its frames and outputs in."""
    return 2 if c.impl == "transformers" and c.dtype == "bfloat16" else 4


def _select(t: int, conds: list[int], cap: int) -> list[int]:
    """SAM 2's ``select_closest_cond_frames``: the conditioning frames frame ``t`` attends."""
    if cap == -1 or len(conds) <= cap:
        return conds
    i = bisect.bisect_left(conds, t)  # conds[i] is the first >= t
    sel = []
    lo, hi = i - 1, i
    if lo >= 0:
        sel.append(conds[lo])
        lo -= 1
    if hi < len(conds):
        sel.append(conds[hi])
        hi += 1
    while len(sel) < cap:  # then the temporally closest others (ties: the earlier first)
        if lo < 0 and hi >= len(conds):
            break
        if hi >= len(conds) or (lo >= 0 and abs(conds[lo] - t) <= abs(conds[hi] - t)):
            sel.append(conds[lo])
            lo -= 1
        else:
            sel.append(conds[hi])
            hi += 1
    return sorted(sel)


def _read_at(
    t: int, start: int, conds: list[int], cap: int, arch, cset: set[int] | None = None
) -> tuple[int, int]:
    """(memory frames, object pointers) non-conditioning frame ``t`` reads (forward)."""
    if cap == -1 or len(conds) <= cap:  # every conditioning frame is selected
        sset = cset if cset is not None else set(conds)
        n_sel, past_sel = len(conds), bisect.bisect_right(conds, t)
    else:
        sel = _select(t, conds, cap)
        sset = set(sel)
        n_sel, past_sel = len(sel), sum(1 for c in sel if c <= t)
    frames = n_sel
    s = arch.temporal_stride
    for t_pos in range(1, arch.num_maskmem):
        t_rel = arch.num_maskmem - t_pos
        prev = t - 1 if t_rel == 1 else ((t - 2) // s) * s - (t_rel - 2) * s
        if start <= prev < t and prev not in sset:
            frames += 1
    ptrs = past_sel
    for d in range(1, arch.max_obj_ptrs):
        p = t - d
        if p < start:
            break
        if p not in sset:
            ptrs += 1
    return frames, ptrs


@lru_cache(maxsize=4096)
def _max_read(n: int, start: int, conds: tuple[int, ...], cap: int, arch) -> tuple[int, int]:
    cl = list(conds)
    cset = set(cl)
    gap = max((b - a for a, b in zip(cl, cl[1:], strict=False)), default=0)
    window = 2 * max(gap, 1) + 2 * arch.max_obj_ptrs + arch.num_maskmem
    # the pattern repeats with the prompt spacing: the video's ends cover every case
    ts = set(range(start, min(n, start + window))) | set(range(max(start, n - window), n))
    if len(cl) > 1 and gap > window:
        for c in cl:
            ts |= set(range(c, min(n, c + window)))
    best = (0, 0)
    for t in sorted(ts):
        if t in cset or t <= start:
            continue
        best = max(best, _read_at(t, start, cl, cap, arch, cset))
    return best


def object_batch_size(w: Workload, c: Candidate) -> int:
    """Objects one step of the per-object predictor runs at once under ``knobs.object_batch``:
    the largest group of objects prompted on the same frames (the ones whose memory reads can
    be identical: ``sam2tune/adapter/batched.py``), capped at the knob (0 = no cap)."""
    if c.object_batch == 1 or w.num_objects <= 1:
        return 1
    per = [tuple(fs) for fs in w.prompted()]
    group = max(per.count(fs) for fs in set(per))
    return group if c.object_batch <= 0 else min(group, c.object_batch)


def object_batches(w: Workload, c: Candidate) -> int:
    """Batched calls one step makes with every object present under ``knobs.object_batch``:
    each group of objects prompted on the same frames split into batches of at most K
    (0 = one batch per group); the number of objects where K = 1."""
    if c.object_batch == 1 or w.num_objects <= 1 or c.predictor != "per_object":
        return w.num_objects
    per = [tuple(fs) for fs in w.prompted()]
    sizes = [per.count(fs) for fs in set(per)]
    return sum(1 if c.object_batch <= 0 else -(-g // c.object_batch) for g in sizes)


def memory_read(w: Workload, c: Candidate, S: int | None = None) -> dict[str, int]:
    """The most memory one step's attention reads over the video (forward propagation).

    Returns:
        ``{"frames": memory frames, "pointers": object pointers, "tokens": memory tokens,
        "batch": objects per batch}``; ``frames == 0`` when no frame runs memory attention
        (every tracked frame is a conditioning frame).
    """
    arch = _arch(w.model)
    S = S or c.image_size or w.image_size
    cap = c.max_cond_frames_in_attn
    n = w.num_frames
    seg = c.segment_frames if c.segment_frames and c.segment_frames < n else 0
    prompted = w.prompted()
    if c.predictor == "legacy_batched":
        prompted = [sorted({f for fs in prompted for f in fs})]
    best = (0, 0)
    for fs in prompted:
        if seg:  # each segment is seeded on its first frame: at most one segment's prompts
            span = [f for f in fs if f < seg] or [0]
            best = max(best, _max_read(seg, span[0], tuple(span), cap, arch))
        else:
            best = max(best, _max_read(n, fs[0], tuple(fs), cap, arch))
    frames, ptrs = best
    batch = w.num_objects if c.predictor == "legacy_batched" else object_batch_size(w, c)
    tokens = frames * (S // 16) ** 2 + ptrs * arch.ptr_tokens if frames else 0
    return {"frames": frames, "pointers": ptrs, "tokens": tokens, "batch": batch}

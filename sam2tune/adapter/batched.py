"""Objects tracked in batches (``knobs.object_batch=K``) by SAM 2.1's per-object predictor.

SAM 2.1's ``SAM2VideoPredictor.propagate_in_video`` runs every object on its own
(``_run_single_frame_inference(..., batch_size=1)`` on each object's ``output_dict``): lean, but a
step costs the memory attention, decoder and memory encoder once per object. Here the same loop
runs SAM 2's own ``_run_single_frame_inference`` once per *batch* of objects, on an output dict
that presents the batch's memories stacked along the batch dimension (what the legacy batched
predictor keeps), and stores each object's slice of the output back in its own dict - so
objects can still be added mid-video, re-prompted, released, as with the per-object predictor.
No model code is copied or changed.

Exactness. SAM 2 selects what a step attends to from the output dict alone: the conditioning
frames (all, or the ``max_cond_frames_in_attn`` closest), the last ``num_maskmem - 1`` frames'
memories (every ``memory_temporal_stride_for_eval``-th) and up to ``max_obj_ptrs_in_encoder``
object pointers of earlier frames. Two objects read identical positions exactly when their
conditioning frames are the same and the same recent frames are present, so objects are
batched only within groups with the same *read signature* (conditioning frame indices + which of
the frames within reach hold an output); other objects run in their own batches. Within a batch
each object's tensors are its own; only the kernels run batched, so logits agree to float32
rounding of the batched kernels (measured in ``tests/test_object_batch.py`` and
``experiments/bench_object_batch.py``): a mask pixel can differ only where the logit is within
that rounding of 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

__all__ = ["propagate_batched", "read_signature", "batches"]

_READ = ("maskmem_features", "obj_ptr")  # what SAM 2's memory preparation reads of an output


class _Stacked(Mapping[int, dict[str, Any]]):
    """One of SAM 2's per-object output dicts ("cond_frame_outputs" / "non_cond_frame_outputs")
    for a batch of objects: frame ``t``'s entry is the objects' entries stacked along the batch
    dimension, built when SAM 2 reads it (only the frames it selects)."""

    def __init__(self, dicts: list[dict[int, dict[str, Any]]]) -> None:
        self._dicts = dicts
        self._memo: dict[int, dict[str, Any]] = {}

    def __getitem__(self, t: int) -> dict[str, Any]:
        hit = self._memo.get(t)
        if hit is None:
            outs = [d[t] for d in self._dicts]  # KeyError where the first lacks it, as a dict
            hit = {k: torch.cat([o[k] for o in outs]) for k in _READ}
            enc = outs[0]["maskmem_pos_enc"]  # SAM 2's constant, expanded: one per object
            hit["maskmem_pos_enc"] = [x.expand(len(outs), -1, -1, -1) for x in enc]
            self._memo[t] = hit
        return hit

    def __iter__(self) -> Iterator[int]:
        return iter(self._dicts[0])

    def __len__(self) -> int:
        return len(self._dicts[0])

    def __contains__(self, t: object) -> bool:
        return t in self._dicts[0]


def _reach(predictor: Any) -> int:
    """How many frames back a step's memory selection may look (memories and pointers)."""
    stride = int(getattr(predictor, "memory_temporal_stride_for_eval", 1))
    ptrs = int(getattr(predictor, "max_obj_ptrs_in_encoder", 16))
    return max(predictor.num_maskmem * stride + 2, ptrs + 1)


def read_signature(output_dict: dict[str, Any], frame_idx: int, reach: int) -> tuple[Any, ...]:
    """What SAM 2's memory selection depends on for one object at ``frame_idx`` (forward): its
    conditioning frames and which of the ``reach`` frames before hold a non-conditioning output."""
    nc = output_dict["non_cond_frame_outputs"]
    recent = tuple(frame_idx - d in nc for d in range(1, reach + 1))
    return tuple(sorted(output_dict["cond_frame_outputs"])), recent


def batches(signatures: list[tuple[int, Any]], k: int) -> list[list[int]]:
    """Object indices grouped by identical read signature (first-seen order), each group cut into
    batches of at most ``k`` (0: the whole group)."""
    groups: dict[Any, list[int]] = {}
    for obj_idx, sig in signatures:
        groups.setdefault(sig, []).append(obj_idx)
    out: list[list[int]] = []
    for idxs in groups.values():
        size = len(idxs) if k <= 0 else k
        out.extend(idxs[i : i + size] for i in range(0, len(idxs), size))
    return out


def _slice(out: dict[str, Any], j: int) -> dict[str, Any]:
    """Object ``j``'s part of a batched compact output (SAM 2's per-object layout)."""
    enc = out["maskmem_pos_enc"]
    return {
        "maskmem_features": out["maskmem_features"][j : j + 1],
        "maskmem_pos_enc": None if enc is None else [x[j : j + 1] for x in enc],
        "pred_masks": out["pred_masks"][j : j + 1],
        "obj_ptr": out["obj_ptr"][j : j + 1],
        "object_score_logits": out["object_score_logits"][j : j + 1],
    }


def _track(predictor: Any, state: dict, frame_idx: int, idxs: list[int]) -> list[torch.Tensor]:
    """One batch's step through SAM 2's own ``_run_single_frame_inference``; each object's output
    stored in its own dict; the batch's low-res mask logits per object."""
    dicts = [state["output_dict_per_obj"][i] for i in idxs]
    stacked = {
        key: _Stacked([d[key] for d in dicts])
        for key in ("cond_frame_outputs", "non_cond_frame_outputs")
    }
    out, masks = predictor._run_single_frame_inference(
        inference_state=state,
        output_dict=stacked,
        frame_idx=frame_idx,
        batch_size=len(idxs),
        is_init_cond_frame=False,
        point_inputs=None,
        mask_inputs=None,
        reverse=False,
        run_mem_encoder=True,
    )
    for j, d in enumerate(dicts):
        d["non_cond_frame_outputs"][frame_idx] = _slice(out, j)
    return [masks[j : j + 1] for j in range(len(idxs))]


@torch.inference_mode()
def propagate_batched(
    predictor: Any, state: dict, start_frame_idx: int, max_frame_num_to_track: int, k: int
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """SAM 2.1's ``propagate_in_video`` (forward) with objects of the same read signature tracked
    in batches of up to ``k`` (0 = all of a group); yields what it yields."""
    predictor.propagate_in_video_preflight(state)
    obj_ids = state["obj_ids"]
    n = predictor._get_obj_num(state)
    end = min(start_frame_idx + max_frame_num_to_track, state["num_frames"] - 1)
    reach = _reach(predictor)
    for frame_idx in range(start_frame_idx, end + 1):
        masks: list[Any] = [None] * n
        todo = []
        for obj_idx in range(n):
            od = state["output_dict_per_obj"][obj_idx]
            if frame_idx in od["cond_frame_outputs"]:  # prompted here: SAM 2's own output
                masks[obj_idx] = od["cond_frame_outputs"][frame_idx]["pred_masks"].to(
                    state["device"], non_blocking=True
                )
                if predictor.clear_non_cond_mem_around_input:
                    predictor._clear_obj_non_cond_mem_around_input(state, frame_idx, obj_idx)
            else:
                todo.append((obj_idx, read_signature(od, frame_idx, reach)))
        for idxs in batches(todo, k):
            for i, m in zip(idxs, _track(predictor, state, frame_idx, idxs), strict=True):
                masks[i] = m
        for obj_idx in range(n):
            state["frames_tracked_per_obj"][obj_idx][frame_idx] = {"reverse": False}
        all_masks = torch.cat(masks, dim=0) if n > 1 else masks[0]
        _, video_res_masks = predictor._get_orig_video_res_output(state, all_masks)
        yield frame_idx, obj_ids, video_res_masks

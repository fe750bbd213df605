"""The public bounded-memory API: SAM 2's ``propagate_in_video`` for your own pipeline, with
sam2tune's memory strategies.

    from sam2.build_sam import build_sam2_video_predictor
    import sam2tune

    predictor = build_sam2_video_predictor(config, checkpoint, device="cuda")
    prompts = [dict(frame_idx=0, obj_id=1, box=[40, 30, 100, 90])]
    for frame_idx, obj_ids, mask_logits in sam2tune.propagate(
        predictor, "video_frames/", prompts, strategy="stream"
    ):
        masks = (mask_logits > 0.0).cpu().numpy()

``stock`` is SAM 2's own loop; ``release`` drops per-frame outputs no later frame reads; ``stream``
also decodes frames on demand instead of loading the whole video. All three yield the same values
(bit-identical mask logits; tested).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["propagate", "STRATEGIES"]

STRATEGIES = ("stock", "release", "stream")
_KEYS = {"frame_idx", "obj_id", "points", "labels", "box", "mask"}


def _prompt(i: int, d: Mapping[str, Any]) -> Any:
    from sam2tune.scenario import Prompt

    if not isinstance(d, Mapping):
        raise TypeError(
            f"prompts[{i}]: a dict with SAM 2's argument names, got {type(d).__name__}"
        )
    unknown = set(d) - _KEYS
    if unknown:
        raise ValueError(
            f"prompts[{i}]: unknown key(s) {', '.join(sorted(unknown))} "
            f"(SAM 2's names: {', '.join(sorted(_KEYS))})"
        )
    for k in ("frame_idx", "obj_id"):
        if k not in d:
            raise ValueError(f"prompts[{i}]: {k} is required")
    frame, obj = int(d["frame_idx"]), int(d["obj_id"])
    if d.get("mask") is not None:
        if any(d.get(k) is not None for k in ("points", "box")):
            raise ValueError(f"prompts[{i}]: a mask prompt takes no points or box (SAM 2)")
        return Prompt(frame, obj, "mask", mask=np.asarray(d["mask"], bool))
    points, labels = d.get("points"), d.get("labels")
    if (points is None) != (labels is None):
        raise ValueError(f"prompts[{i}]: points and labels go together")
    pts = None if points is None else np.asarray(points, np.float32).reshape(-1, 2).tolist()
    lbl = None if labels is None else np.asarray(labels, np.int32).reshape(-1).tolist()
    if pts is not None and len(pts) != len(lbl or []):
        raise ValueError(f"prompts[{i}]: {len(pts)} points but {len(lbl or [])} labels")
    if d.get("box") is not None:
        box = np.asarray(d["box"], np.float32).reshape(-1).tolist()
        if len(box) != 4:
            raise ValueError(f"prompts[{i}]: box is [x0, y0, x1, y1], got {len(box)} numbers")
        return Prompt(frame, obj, "box", box=box, points=pts, labels=lbl)
    if pts is None:
        raise ValueError(f"prompts[{i}]: give points + labels, a box, or a mask")
    return Prompt(frame, obj, "points", points=pts, labels=lbl)


def propagate(
    predictor: Any,
    video_path: str,
    prompts: Sequence[Mapping[str, Any]],
    strategy: str = "stock",
    segment_frames: int = 0,
    prefetch: int = 4,
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """Prompt and propagate forward through a video, yielding what SAM 2's
    ``propagate_in_video`` yields.

    Args:
        predictor: a predictor built with SAM 2's own ``build_sam2_video_predictor``.
        video_path: a folder of ``<index>.jpg`` frames or an mp4 file (SAM 2's inputs).
        prompts: dicts with SAM 2's argument names: ``frame_idx``, ``obj_id`` and ``points`` +
            ``labels``, or ``box`` (optionally with points), or ``mask``; coordinates in video
            pixels. Objects first prompted after the first frame are added when propagation
            reaches them; an object's later prompts are given when it is added.
        strategy: ``stock`` (SAM 2's own loop), ``release`` or ``stream`` (bounded memory).
        segment_frames: > 0 splits the video into sessions of this many frames (each seeded
            with the previous one's last masks; not bit-identical to one session).
        prefetch: ``stream`` only: frames decoded ahead by as many background threads (a
            bounded queue, so the loop waits on decoding only when the decoder is slower than
            SAM 2); 0 decodes in the loop. The values yielded do not depend on it.

    Yields:
        ``(frame_idx, obj_ids, mask_logits)``: the logits SAM 2 returns, (objects, 1, H, W) at
        the video's resolution, on the predictor's device.

    Raises:
        ValueError: an unknown strategy or a malformed prompt (named by its index), at the call
            (before any frame is loaded).
    """
    from sam2tune.adapter.segments import SegmentedSession
    from sam2tune.adapter.session import Session
    from sam2tune.config.schema import KnobsConfig

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if not prompts:
        raise ValueError("prompts: give at least one prompt")
    if int(prefetch) < 0:
        raise ValueError(f"prefetch: must be >= 0 (0 = decode in the loop), got {prefetch}")
    ps = [_prompt(i, d) for i, d in enumerate(prompts)]
    knobs = KnobsConfig(
        strategy=strategy, segment_frames=int(segment_frames), stream_prefetch=int(prefetch)
    )
    sess: Session | SegmentedSession
    if segment_frames:
        from sam2tune.video.sources import count_frames

        sess = SegmentedSession(predictor, video_path, knobs, count_frames(video_path))
    else:
        sess = Session(predictor, video_path, knobs)
    return _frames(sess, ps)


def _frames(sess: Any, ps: list[Any]) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    from sam2tune.adapter.session import FrameStep

    sess.init()
    try:
        for ev in sess.track(ps, keep_logits=True):
            if isinstance(ev, FrameStep):
                assert ev.logits is not None
                yield ev.frame_idx, ev.obj_ids, ev.logits
    finally:
        sess.close()

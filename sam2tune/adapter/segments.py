"""``knobs.segment_frames``: a long video processed in segments of N frames.

Each segment is a fresh SAM 2 session over frames ``[lo, lo + N)``; segments after the first
overlap the previous one by one frame, where every object still visible is seeded with a mask
prompt of the previous segment's last mask. Ground-truth prompts that fall in a segment are given
as usual. Memory is bounded by N; what splitting costs shows in ``iou_ref_mean``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from sam2tune.adapter.census import Census
from sam2tune.adapter.session import FrameStep, SegmentStart, Session, Step
from sam2tune.scenario import Prompt

if TYPE_CHECKING:
    from sam2tune.adapter.build import Predictor
    from sam2tune.config.schema import KnobsConfig

__all__ = ["SegmentedSession"]


class SegmentedSession:
    """Same interface as :class:`Session` (init / track / census / num_frames); ``track`` also
    yields ``("init", lo)`` when a segment's session has started."""

    def __init__(
        self,
        predictor: Predictor,
        video_path: str,
        knobs: KnobsConfig,
        num_frames: int,
        stream_window: int = 2,
    ) -> None:
        self.predictor = predictor
        self.video_path = video_path
        self.knobs = knobs
        self.seg = knobs.segment_frames
        self._num_frames = num_frames
        self.stream_window = stream_window
        self.current: Session | None = None
        self.init_s = 0.0  # all segments' init_state time
        self.frame_wait_s = 0.0  # all segments' time waiting for streamed frames
        self.next_is_prompt = False  # the first step starts a segment (an "init" step)
        self._hw: tuple[int, ...] = (1, 1)  # the video's size, once a frame was yielded

    def init(self) -> None:
        """Segments start their own sessions inside :meth:`track` (an ``("init", lo)`` step
        each; ``init_s`` adds them up)."""

    @property
    def num_frames(self) -> int:
        """Frames in the whole video (all segments)."""
        return self._num_frames

    @property
    def frames(self):
        """The current segment's frames (None before the first segment starts)."""
        return self.current.frames if self.current is not None else None

    def track(self, prompts: list[Prompt], keep_logits: bool = False) -> Iterator[Step]:
        """As :meth:`Session.track`, segment by segment (a :class:`SegmentStart` as each
        segment's session starts), frames numbered in the whole video."""
        n = self._num_frames
        a = min(p.frame for p in prompts)
        last: dict[int, np.ndarray] | None = None
        while a < n:
            lo = a if last is None else a - 1
            b = min(lo + self.seg, n)
            gt = [p for p in prompts if lo <= p.frame < b]
            prompted_at_lo = {p.obj_id for p in gt if p.frame == lo}
            local = [
                Prompt(0, obj, "mask", mask=m)
                for obj, m in (last or {}).items()
                if m.any() and obj not in prompted_at_lo
            ]
            local += [
                Prompt(p.frame - lo, p.obj_id, p.kind, p.box, p.points, p.labels, p.mask)
                for p in gt
            ]
            seeded = last is not None
            last = {}
            known = sorted({p.obj_id for p in prompts if p.frame < b})
            if not local:  # every object lost and none prompted here: nothing to track
                for t in range(a, b):
                    self.next_is_prompt = False
                    yield self._complete(FrameStep(t, [], np.zeros((0, *self._hw), bool),
                                                   torch.zeros((0, 1, *self._hw))
                                                   if keep_logits else None), known)
                a = b
                continue
            self.current = Session(
                self.predictor, self.video_path, self.knobs, (lo, b), self.stream_window
            )
            self.current.init()
            self.init_s += self.current.init_s
            self.next_is_prompt = True
            yield SegmentStart(lo)
            for ev in self.current.track(local, keep_logits):
                if not isinstance(ev, FrameStep):
                    self.next_is_prompt = self.current.next_is_prompt
                    yield ev
                    continue
                f, ids, m = ev.frame_idx, ev.obj_ids, ev.masks
                g = f + lo
                if g == b - 1:
                    last = dict(zip(ids, m, strict=True))
                if seeded and f == 0:
                    continue  # the overlap frame: yielded by the previous segment
                self.next_is_prompt = self.current.next_is_prompt and not (g == b - 1 and b < n)
                self._hw = tuple(m.shape[1:]) if m.shape[0] else self._hw
                yield self._complete(FrameStep(g, ids, m, ev.logits), known)
            self._close_current()
            a = b

    def _complete(self, ev: FrameStep, known: list[int]) -> FrameStep:
        """Every object prompted so far, in id order: one lost at a segment boundary (its last
        mask empty, so nothing seeds it) is yielded empty with SAM 2's no-object logit
        (``NO_OBJ_SCORE`` = -1024), as SAM 2 yields an object it does not see."""
        missing = [o for o in known if o not in ev.obj_ids]
        if not missing:
            return ev
        ids = ev.obj_ids + missing
        order = sorted(range(len(ids)), key=lambda i: ids[i])
        h, w = self._hw
        masks = np.concatenate([ev.masks.reshape(-1, h, w), np.zeros((len(missing), h, w), bool)])
        logits = ev.logits
        if logits is not None:
            fill = torch.full((len(missing), 1, h, w), -1024.0, dtype=logits.dtype,
                              device=logits.device)
            logits = torch.cat([logits.reshape(-1, 1, h, w), fill])[order]
        return FrameStep(ev.frame_idx, [ids[i] for i in order], masks[order], logits)

    def census(self) -> Census:
        """The current segment's census (empty when no segment session is open)."""
        return self.current.census() if self.current and self.current.state else Census()

    def close(self) -> None:
        """Drop the current segment's session."""
        self._close_current()
        self.current = None

    def _close_current(self) -> None:
        if self.current is not None:
            before = self.current.frame_wait_s
            self.current.close()
            self.frame_wait_s += self.current.frame_wait_s - before

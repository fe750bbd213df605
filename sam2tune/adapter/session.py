"""One SAM 2 video session through its public entry points: init_state, prompts, propagation.

Also sam2tune's bounded-memory strategies, which work on SAM 2's inference-state dict between
propagation steps (no model code is copied or changed):

* ``release``: after each frame, drop the per-object non-conditioning outputs that no later frame
  reads in forward propagation, and the low-res masks of frames already yielded;
* ``stream``: ``release`` + frames decoded on demand (:class:`StreamingFrames`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from sam2tune.adapter.census import Census, take_census
from sam2tune.adapter.frames import StreamingFrames, frames_loader_swapped

if TYPE_CHECKING:
    from sam2tune.adapter.build import Predictor
    from sam2tune.config.schema import KnobsConfig
    from sam2tune.scenario import Prompt

__all__ = [
    "Session",
    "VideoSession",
    "ReleasedFrameError",
    "join_groups",
    "release_horizon_back",
]


@dataclass(frozen=True)
class PromptStep:
    """A prompt was given to SAM 2."""

    prompt: Prompt


@dataclass(frozen=True)
class SegmentStart:
    """A segment's SAM 2 session started (``knobs.segment_frames``): ``frame`` is its first."""

    frame: int


@dataclass(frozen=True)
class FrameStep:
    """One propagated frame: ``masks`` is a bool array (objects, H, W) at the video's
    resolution, already on the host; ``logits`` SAM 2's own mask logits (objects, 1, H, W), on
    its device, only when :meth:`Session.track` is asked to keep them."""

    frame_idx: int
    obj_ids: list[int]
    masks: np.ndarray
    logits: torch.Tensor | None = None


#: what :meth:`Session.track` yields
Step = PromptStep | SegmentStart | FrameStep


class VideoSession(Protocol):
    """What the runner needs of one implementation's video session (Meta's :class:`Session` /
    :class:`~sam2tune.adapter.segments.SegmentedSession`, transformers'
    :class:`~sam2tune.adapter.hf.HFSession`): the one interface every adapter implements."""

    init_s: float
    frame_wait_s: float
    next_is_prompt: bool  # whether the next step adds a prompt

    @property
    def frames(self) -> StreamingFrames | None:
        """The streaming loader where there is one (its held frames are counted)."""
        ...

    def init(self) -> None: ...

    def track(self, prompts: list[Prompt], keep_logits: bool = False) -> Iterator[Step]: ...

    def census(self) -> Census: ...

    def close(self) -> None: ...


def join_groups(
    prompts: list[Prompt], num_frames: int, together: bool = False
) -> list[tuple[int, int, list[Prompt]]]:
    """``(start, end, prompts)`` per frame where objects join (their first prompted frame), in
    frame order: each object's prompts, later re-prompts included, are given when it joins, then
    propagation runs from ``start`` to ``end`` (the frame before the next group joins, or the
    last frame). ``together``: every object joins on the earliest prompted frame (an
    implementation that refuses new objects once tracking started)."""
    first: dict[int, int] = {}
    for p in prompts:
        first[p.obj_id] = min(first.get(p.obj_id, p.frame), p.frame)
    if together and first:
        first = dict.fromkeys(first, min(first.values()))
    starts = sorted(set(first.values()))
    ends = [s - 1 for s in starts[1:]] + [num_frames - 1]
    return [
        (start, end, [p for p in prompts if first[p.obj_id] == start])
        for start, end in zip(starts, ends, strict=True)
    ]


class ReleasedFrameError(RuntimeError):
    """A prompt on a frame whose outputs a bounded-memory strategy already released."""


def release_horizon_back(predictor: Predictor) -> int:
    """How many frames back forward propagation still reads non-conditioning outputs, from a
    built predictor's settings (:func:`sam2tune.adapter.arch.horizon_back`)."""
    from sam2tune.adapter.arch import arch_of_predictor

    return arch_of_predictor(predictor).horizon_back


class Session:
    """Wraps a SAM 2 video predictor and one inference state.

    Args:
        frame_range: ``(start, stop)`` of the video to load (segments); None = all of it.
    """

    def __init__(
        self,
        predictor: Predictor,
        video_path: str,
        knobs: KnobsConfig,
        frame_range: tuple[int, int] | None = None,
        stream_window: int = 2,
    ) -> None:
        self.predictor = predictor
        self.video_path = video_path
        self.knobs = knobs
        self.frame_range = frame_range
        self.stream_window = stream_window
        self.state: dict | None = None
        self.frames: StreamingFrames | None = None
        self.init_s = 0.0
        self.frame_wait_s = 0.0  # time spent waiting for streamed frames (added up at close)
        # whether the next step of track() adds a prompt (lets a caller probe prompt steps)
        self.next_is_prompt = True
        self.released_below = 0  # non-conditioning outputs of earlier frames were released
        self._back = release_horizon_back(predictor)

    @property
    def bounded(self) -> bool:
        """Whether a bounded-memory strategy (release / stream) is on."""
        return self.knobs.strategy in ("release", "stream")

    def init(self) -> None:
        """SAM 2's ``init_state`` for the video (through the streaming loader where needed)."""
        t0 = time.perf_counter()
        kwargs = dict(
            offload_video_to_cpu=self.knobs.offload_video_to_cpu,
            offload_state_to_cpu=self.knobs.offload_state_to_cpu,
            async_loading_frames=self.knobs.async_loading_frames,
        )
        if self.knobs.strategy == "stream" or self.frame_range is not None:
            device = (
                torch.device("cpu") if self.knobs.offload_video_to_cpu else self.predictor.device
            )
            start, stop = self.frame_range or (0, None)
            window = self.stream_window if self.knobs.strategy == "stream" else 1 << 30
            prefetch = self.knobs.stream_prefetch if self.knobs.strategy == "stream" else 0
            self.frames = StreamingFrames(
                self.video_path, self.predictor.image_size, device, window, start, stop, prefetch
            )
            if self.knobs.strategy != "stream":  # a segment of a stock/release run: all loaded
                for t in range(len(self.frames)):
                    self.frames[t]
            with frames_loader_swapped(self.predictor, self.frames):
                self.state = self.predictor.init_state(video_path=self.video_path, **kwargs)
        else:
            self.state = self.predictor.init_state(video_path=self.video_path, **kwargs)
        self.init_s = time.perf_counter() - t0

    @property
    def num_frames(self) -> int:
        """Frames in this session's video (or segment)."""
        assert self.state is not None
        return int(self.state["num_frames"])

    def add_prompt(self, p: Prompt) -> None:
        """Give one prompt. Raises :class:`ReleasedFrameError` on a released frame."""
        if self.bounded and p.frame < self.released_below:
            raise ReleasedFrameError(
                f"frame {p.frame} was released by knobs.strategy={self.knobs.strategy} (frames "
                f"before {self.released_below} keep only conditioning outputs); re-prompting "
                "tracked frames or reverse propagation needs knobs.strategy=stock"
            )
        if p.kind == "mask":
            self.predictor.add_new_mask(self.state, p.frame, p.obj_id, torch.from_numpy(p.mask))
        elif p.kind == "box":  # a box, with points too where given (SAM 2 takes both)
            extra: dict[str, Any] = {}
            if p.points is not None:
                extra = dict(points=np.asarray(p.points, np.float32),
                             labels=np.asarray(p.labels, np.int32))
            self.predictor.add_new_points_or_box(
                self.state, p.frame, p.obj_id, box=np.asarray(p.box, np.float32), **extra
            )
        else:
            self.predictor.add_new_points_or_box(
                self.state,
                p.frame,
                p.obj_id,
                points=np.asarray(p.points, np.float32),
                labels=np.asarray(p.labels, np.int32),
            )

    def _release(self, frame_idx: int) -> None:
        """Drop what no frame after ``frame_idx`` reads in forward propagation."""
        assert self.state is not None
        horizon = frame_idx + 1 - self._back
        dicts = list(self.state["output_dict_per_obj"].values())
        if "output_dict" in self.state:  # the legacy batched predictor's consolidated outputs
            dicts.append(self.state["output_dict"])
        for d in dicts:
            nc = d["non_cond_frame_outputs"]
            for t in [t for t in nc if t < horizon]:
                del nc[t]
            out = nc.get(frame_idx)
            if out is not None:
                out["pred_masks"] = None  # yielded already; only re-prompting would read it
        self.released_below = max(self.released_below, horizon)

    def track(self, prompts: list[Prompt], keep_logits: bool = False) -> Iterator[Step]:
        """Prompt and propagate forward through the video, one unit of work per step.

        Objects are added when propagation reaches the frame where they first appear, as SAM 2
        allows ("we always allow adding new objects, including after tracking starts"); each
        object's later re-prompts are given when it is added, on frames not tracked yet, so every
        prompted frame is an initial conditioning frame. (Giving a late object's prompt before
        propagation instead makes SAM 2 track it on earlier frames from a future conditioning
        frame alone, which fails in float32: bf16 memory without fp32 object pointers.)
        The legacy batched predictor refuses new objects once tracking started, so there every
        prompt is given before propagation.

        Yields:
            a :class:`PromptStep` after each prompt and a :class:`FrameStep` after each frame
            (its masks copied to the host at once, so no mask stays on the device).
        """
        groups = join_groups(
            prompts, self.num_frames, together=self.knobs.predictor == "legacy_batched"
        )
        for i, (start, end, group) in enumerate(groups):
            for k, p in enumerate(group):
                self.add_prompt(p)
                self.next_is_prompt = k + 1 < len(group)
                yield PromptStep(p)
            for frame_idx, obj_ids, logits in self._propagate(start, end - start):
                masks = (logits[:, 0] > 0.0).cpu().numpy()
                kept = logits if keep_logits else None
                del logits
                if self.bounded:
                    self._release(frame_idx)
                self.next_is_prompt = frame_idx == end and i + 1 < len(groups)
                yield FrameStep(int(frame_idx), [int(i) for i in obj_ids], masks, kept)

    def _propagate(self, start: int, frames: int) -> Iterator[tuple[int, list[int], Any]]:
        """SAM 2's forward propagation, or the same with objects tracked in batches
        (``knobs.object_batch`` != 1, per-object predictor)."""
        assert self.state is not None
        if self.knobs.object_batch != 1 and "output_dict_per_obj" in self.state:
            from sam2tune.adapter.batched import propagate_batched

            return propagate_batched(
                self.predictor, self.state, start, frames, self.knobs.object_batch
            )
        return self.predictor.propagate_in_video(
            self.state, start_frame_idx=start, max_frame_num_to_track=frames
        )

    def census(self) -> Census:
        """The inference state counted by role now."""
        assert self.state is not None
        return take_census(
            self.state, self.knobs.offload_video_to_cpu, self.knobs.offload_state_to_cpu
        )

    def close(self) -> None:
        """Drop the inference state (and the streaming loader, its threads stopped)."""
        self.state = None
        if self.frames is not None:
            self.frame_wait_s += self.frames.wait_s
            self.frames.close()
        self.frames = None

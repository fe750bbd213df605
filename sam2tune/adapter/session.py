"""One SAM 2 video session through its public entry points: init_state, prompts, propagation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from sam2tune.adapter.census import Census, take_census

if TYPE_CHECKING:
    from sam2tune.config.schema import KnobsConfig
    from sam2tune.scenario import Prompt

__all__ = ["Session"]


class Session:
    """Wraps a SAM 2 video predictor and one inference state."""

    def __init__(self, predictor: torch.nn.Module, video_path: str, knobs: KnobsConfig) -> None:
        self.predictor = predictor
        self.video_path = video_path
        self.knobs = knobs
        self.state: dict | None = None
        self.init_s = 0.0
        # whether the next step of track() adds a prompt (lets a caller probe prompt steps)
        self.next_is_prompt = True

    def init(self) -> None:
        t0 = time.perf_counter()
        self.state = self.predictor.init_state(
            video_path=self.video_path,
            offload_video_to_cpu=self.knobs.offload_video_to_cpu,
            offload_state_to_cpu=self.knobs.offload_state_to_cpu,
            async_loading_frames=self.knobs.async_loading_frames,
        )
        self.init_s = time.perf_counter() - t0

    @property
    def num_frames(self) -> int:
        assert self.state is not None
        return int(self.state["num_frames"])

    def add_prompt(self, p: Prompt) -> None:
        if p.kind == "mask":
            self.predictor.add_new_mask(self.state, p.frame, p.obj_id, torch.from_numpy(p.mask))
        elif p.kind == "box":
            self.predictor.add_new_points_or_box(
                self.state, p.frame, p.obj_id, box=np.asarray(p.box, np.float32)
            )
        else:
            self.predictor.add_new_points_or_box(
                self.state,
                p.frame,
                p.obj_id,
                points=np.asarray(p.points, np.float32),
                labels=np.asarray(p.labels, np.int32),
            )

    def track(self, prompts: list[Prompt]) -> Iterator[tuple]:
        """Prompt and propagate through the video, one unit of work per step.

        Objects are added when propagation reaches the frame where they first appear, as SAM 2
        allows ("we always allow adding new objects, including after tracking starts"); each
        object's later re-prompts are given when it is added, on frames not tracked yet, so every
        prompted frame is an initial conditioning frame. (Giving a late object's prompt before
        propagation instead makes SAM 2 track it on earlier frames from a future conditioning
        frame alone, which fails in float32: bf16 memory without fp32 object pointers.)
        The legacy batched predictor refuses new objects once tracking started, so there every
        prompt is given before propagation.

        Yields:
            ``("prompt", prompt)`` after each prompt, and ``("frame", frame_idx, obj_ids, masks)``
            after each frame, ``masks`` a bool array (objects, H, W) at the video's resolution,
            copied to the host at once so no mask stays on the device.
        """
        first: dict[int, int] = {}
        for p in prompts:
            first[p.obj_id] = min(first.get(p.obj_id, p.frame), p.frame)
        if self.knobs.predictor == "legacy_batched":
            first = dict.fromkeys(first, min(first.values()))
        starts = sorted(set(first.values()))
        for i, start in enumerate(starts):
            group = [p for p in prompts if first[p.obj_id] == start]
            for k, p in enumerate(group):
                self.add_prompt(p)
                self.next_is_prompt = k + 1 < len(group)
                yield ("prompt", p)
            end = starts[i + 1] - 1 if i + 1 < len(starts) else self.num_frames - 1
            for frame_idx, obj_ids, logits in self.predictor.propagate_in_video(
                self.state, start_frame_idx=start, max_frame_num_to_track=end - start
            ):
                masks = (logits[:, 0] > 0.0).cpu().numpy()
                self.next_is_prompt = frame_idx == end and i + 1 < len(starts)
                yield ("frame", int(frame_idx), list(obj_ids), masks)

    def census(self) -> Census:
        assert self.state is not None
        return take_census(
            self.state, self.knobs.offload_video_to_cpu, self.knobs.offload_state_to_cpu
        )

    def close(self) -> None:
        self.state = None

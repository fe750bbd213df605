"""Prompts derived from ground truth.

Each object is prompted on the first frame where it is visible (at least
``scenario.min_prompt_area`` pixels) - objects that enter mid-video included - and optionally
re-prompted every ``scenario.reannotate_every`` frames where it is visible. All prompts are given
before propagation, so every prompted frame is an initial conditioning frame in SAM 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sam2tune.config.schema import ScenarioConfig
from sam2tune.errors import InputError
from sam2tune.video.sources import VideoData

__all__ = ["Prompt", "make_prompts", "interior_point", "mask_box"]


@dataclass
class Prompt:
    """One prompt in SAM 2's terms: frame, object, and a box, points or mask."""
    frame: int
    obj_id: int
    kind: str  # box | points | mask
    box: list[float] | None = None  # x0, y0, x1, y1 in video pixels
    points: list[list[float]] | None = None  # [[x, y], ...] in video pixels
    labels: list[int] | None = None  # 1 = positive
    mask: np.ndarray | None = field(default=None, repr=False)

    def describe(self) -> dict:
        """JSON-ready description (for the report and the reference key)."""
        d = {"frame": self.frame, "obj_id": self.obj_id, "kind": self.kind}
        if self.box is not None:
            d["box"] = self.box
        if self.points is not None:
            d["points"], d["labels"] = self.points, self.labels
        return d


def mask_box(mask: np.ndarray) -> list[float]:
    """The bounding box (x0, y0, x1, y1) of a binary mask."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def interior_point(mask: np.ndarray) -> list[float]:
    """The mask pixel farthest from its boundary (a click a person would make)."""
    import cv2

    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return [float(x), float(y)]


def _prompt(kind: str, t: int, obj_id: int, m: np.ndarray) -> Prompt:
    if kind == "box":
        return Prompt(t, obj_id, kind, box=mask_box(m))
    if kind == "points":
        return Prompt(t, obj_id, kind, points=[interior_point(m)], labels=[1])
    return Prompt(t, obj_id, kind, mask=m.copy())


def make_prompts(video: VideoData, scenario: ScenarioConfig, num_frames: int) -> list[Prompt]:
    """Prompts for every object in the ground truth, sorted by frame then object id.

    Raises:
        InputError: the video has no ground truth, or no object is ever visible.
    """
    if not video.has_ground_truth:
        raise InputError(
            "video.annotations: prompts are derived from ground truth; give DAVIS-style masks"
        )
    visible: dict[int, list[int]] = {}
    labels_by_frame: dict[int, np.ndarray] = {}
    for t in range(num_frames):
        lab = video.labels(t)
        if lab is None:
            continue
        ids, counts = np.unique(lab, return_counts=True)
        for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
            if i != 0 and c >= scenario.min_prompt_area:
                visible.setdefault(i, []).append(t)
                labels_by_frame[t] = lab
    if not visible:
        raise InputError("video.annotations: no object is visible in any annotated frame")
    prompts = []
    k = scenario.reannotate_every
    for obj_id, frames in sorted(visible.items()):
        first = frames[0]
        chosen = [first]
        if k > 0:
            vis = set(frames)
            chosen += [t for t in range(first + k, num_frames, k) if t in vis]
        for t in chosen:
            prompts.append(_prompt(scenario.prompt, t, obj_id, labels_by_frame[t] == obj_id))
    prompts.sort(key=lambda p: (p.frame, p.obj_id))
    return prompts

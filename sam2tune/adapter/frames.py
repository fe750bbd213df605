"""Frames decoded on demand for ``knobs.strategy=stream``.

SAM 2's ``init_state`` loads the whole video (``load_video_frames``) into one tensor. For
streaming, the adapter hands ``init_state`` a :class:`StreamingFrames` instead (the module-level
loader is swapped only for the duration of that call): an indexable sequence that decodes frame
``t`` when SAM 2 asks for it, with SAM 2's own JPEG reader
(``sam2.utils.misc._load_img_as_tensor``) or decord as SAM 2's mp4 loader uses it, normalised in
float32 exactly as SAM 2 does (so masks stay bit-identical), and keeps only the last ``window``
frames.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from sam2tune.video.sources import jpeg_frames

__all__ = ["StreamingFrames", "frames_loader_swapped"]

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class StreamingFrames:
    """Video frames ``[start, stop)`` of a JPEG folder or mp4, decoded on demand, windowed."""

    def __init__(
        self,
        video_path: str,
        image_size: int,
        device: torch.device,
        window: int = 2,
        start: int = 0,
        stop: int | None = None,
    ) -> None:
        self.image_size = image_size
        self.device = device
        self.window = window
        self._mean = torch.tensor(_MEAN, dtype=torch.float32)[:, None, None].to(device)
        self._std = torch.tensor(_STD, dtype=torch.float32)[:, None, None].to(device)
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        if os.path.isdir(video_path):
            from PIL import Image

            self._paths = [str(p) for p in jpeg_frames(video_path)]
            self._reader = None
            with Image.open(self._paths[0]) as im:
                self.video_width, self.video_height = im.size
            total = len(self._paths)
        else:
            import decord

            decord.bridge.set_bridge("torch")
            self._paths = []
            self.video_height, self.video_width, _ = decord.VideoReader(video_path).next().shape
            self._reader = decord.VideoReader(video_path, width=image_size, height=image_size)
            total = len(self._reader)
        self.start = start
        self.stop = total if stop is None else min(stop, total)

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def images(self) -> list[torch.Tensor]:
        """The frames held now (for the census)."""
        return list(self._cache.values())

    def _decode(self, t: int) -> torch.Tensor:
        if self._reader is None:
            from sam2.utils.misc import _load_img_as_tensor

            img64, _, _ = _load_img_as_tensor(self._paths[t], self.image_size)
            img = img64.float()  # SAM 2 assigns float64 into a float32 tensor: same rounding
        else:
            img = self._reader[t].permute(2, 0, 1).float() / 255.0
        img = img.to(self.device)
        img -= self._mean
        img /= self._std
        return img

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(index)
        img = self._cache.get(index)
        if img is None:
            img = self._decode(self.start + index)
            self._cache[index] = img
            while len(self._cache) > self.window:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(index)
        return img


@contextmanager
def frames_loader_swapped(predictor: Any, frames: StreamingFrames) -> Iterator[None]:
    """Within the block, the predictor's ``init_state`` receives ``frames`` instead of loading the
    whole video."""
    module: Any = sys.modules[type(predictor).init_state.__module__]  # sam2's predictor module
    original = module.load_video_frames

    def load(**_kwargs):
        return frames, frames.video_height, frames.video_width

    module.load_video_frames = load
    try:
        yield
    finally:
        module.load_video_frames = original

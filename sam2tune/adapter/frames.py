"""Frames decoded on demand for ``knobs.strategy=stream``.

SAM 2's ``init_state`` loads the whole video (``load_video_frames``) into one tensor. For
streaming, the adapter hands ``init_state`` a :class:`StreamingFrames` instead (the module-level
loader is swapped only for the duration of that call): an indexable sequence that decodes frame
``t`` when SAM 2 asks for it, with SAM 2's own JPEG reader
(``sam2.utils.misc._load_img_as_tensor``) or decord as SAM 2's mp4 loader uses it, normalised in
float32 exactly as SAM 2 does (so masks stay bit-identical), and keeps only the last ``window``
frames.

With ``prefetch > 0`` the next ``prefetch`` frames (in the direction SAM 2 walks) are decoded
ahead by that many background threads (Pillow, decord and torch release the GIL while they work),
so propagation waits on the decoder only when decoding is slower than tracking. The frames held
are bounded: at most ``window`` served frames plus ``prefetch`` queued ones (the memory model's
frame term counts both). ``wait_s`` is the time the caller spent waiting for frames.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import torch

from sam2tune.video.live import LiveSource
from sam2tune.video.sources import jpeg_frames

__all__ = ["StreamingFrames", "frames_loader_swapped"]

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class StreamingFrames:
    """Video frames ``[start, stop)`` of a JPEG folder, an mp4 or a :class:`LiveSource` (an
    iterable read once, in order), decoded on demand, windowed."""

    def __init__(
        self,
        video_path: str | LiveSource,
        image_size: int,
        device: torch.device,
        window: int = 2,
        start: int = 0,
        stop: int | None = None,
        prefetch: int = 0,
    ) -> None:
        self.image_size = image_size
        self.device = device
        self.window = window
        self.prefetch = max(0, int(prefetch))
        self.wait_s = 0.0  # the caller's time blocked on frames (decoding inline or queued)
        self.decode_s = 0.0  # decoding time summed over threads
        self.decoded = 0
        self._stats = threading.Lock()
        self._reader_lock = threading.Lock()  # decord's reader is not safe across threads
        self._pending: dict[int, Future[torch.Tensor]] = {}
        self._last = -1
        self._step = 1
        live = isinstance(video_path, LiveSource)
        self._live = video_path if isinstance(video_path, LiveSource) else None
        self._pool = (
            ThreadPoolExecutor(  # a live source is read in order: one worker
                max_workers=1 if live else min(self.prefetch, os.cpu_count() or 1),
                thread_name_prefix="sam2tune-decode",
            )
            if self.prefetch
            else None
        )
        self._mean = torch.tensor(_MEAN, dtype=torch.float32)[:, None, None].to(device)
        self._std = torch.tensor(_STD, dtype=torch.float32)[:, None, None].to(device)
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._paths: list[str] = []
        self._reader: Any = None
        if isinstance(video_path, LiveSource):
            self.video_width, self.video_height = video_path.width, video_path.height
            total = video_path.num_frames
        elif os.path.isdir(video_path):
            from PIL import Image

            self._paths = [str(p) for p in jpeg_frames(video_path)]
            with Image.open(self._paths[0]) as im:
                self.video_width, self.video_height = im.size
            total = len(self._paths)
        else:
            import decord

            decord.bridge.set_bridge("torch")
            self.video_height, self.video_width, _ = decord.VideoReader(video_path).next().shape
            self._reader = decord.VideoReader(video_path, width=image_size, height=image_size)
            total = len(self._reader)
        self.start = start
        self.stop = total if stop is None else min(stop, total)

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def images(self) -> list[torch.Tensor]:
        """The frames held now, served and queued (for the census)."""
        queued = [  # a frame that failed to decode raises when it is asked for, not here
            f.result()
            for f in list(self._pending.values())
            if f.done() and not f.cancelled() and f.exception() is None
        ]
        return list(self._cache.values()) + queued

    def _decode(self, t: int) -> torch.Tensor:
        t0 = time.perf_counter()
        if self._live is not None:
            img = _as_sam2_reads(self._live.read(t), self.image_size)
        elif self._reader is None:
            from sam2.utils.misc import _load_img_as_tensor

            img64, _, _ = _load_img_as_tensor(self._paths[t], self.image_size)
            img = img64.float()  # SAM 2 assigns float64 into a float32 tensor: same rounding
        else:
            with self._reader_lock:
                raw = self._reader[t]
            img = raw.permute(2, 0, 1).float() / 255.0
        img = img.to(self.device)
        img -= self._mean
        img /= self._std
        with self._stats:
            self.decode_s += time.perf_counter() - t0
            self.decoded += 1
        return img

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(index)
        img = self._cache.get(index)
        if img is None:
            fut = self._pending.pop(index, None)
            t0 = time.perf_counter()
            img = fut.result() if fut is not None else self._decode(self.start + index)
            self.wait_s += time.perf_counter() - t0
            self._cache[index] = img
            while len(self._cache) > self.window:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(index)
        if self._pool is not None:
            self._ahead(index)
        return img

    def _ahead(self, index: int) -> None:
        """Queue the next ``prefetch`` frames in the direction of travel; drop the rest."""
        assert self._pool is not None
        if index != self._last and self._last >= 0:
            self._step = 1 if index > self._last else -1
        self._last = index
        wanted = [index + self._step * k for k in range(1, self.prefetch + 1)]
        wanted = [i for i in wanted if 0 <= i < len(self) and i not in self._cache]
        for i in [i for i in self._pending if i not in wanted]:
            self._pending.pop(i).cancel()  # a running decode finishes; its result is dropped
        for i in wanted:
            if i not in self._pending:
                self._pending[i] = self._pool.submit(self._decode, self.start + i)

    def close(self) -> None:
        """Stop the decoding threads and drop every frame held."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()
        self._cache.clear()


def _as_sam2_reads(rgb: Any, image_size: int) -> torch.Tensor:
    """An RGB uint8 frame resized and scaled as SAM 2's JPEG reader does
    (``_load_img_as_tensor``: Pillow ``resize`` to S x S, / 255 in float64), in float32."""
    import numpy as np
    from PIL import Image

    img_np = np.array(Image.fromarray(rgb).resize((image_size, image_size))) / 255.0
    return torch.from_numpy(img_np).permute(2, 0, 1).float()


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

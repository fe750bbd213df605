"""Frames from anywhere: an iterable of H x W x 3 uint8 RGB arrays (OpenCV's ``VideoCapture``
after ``cvtColor(BGR2RGB)``, PyAV's ``frame.to_ndarray(format="rgb24")``, a camera, a network
stream) read once, in order, never re-read.

:class:`LiveSource` hands frame ``t`` to the streaming loader (``knobs.strategy=stream``'s
:class:`~sam2tune.adapter.frames.StreamingFrames`), which resizes and normalises it exactly as
SAM 2's JPEG reader (``sam2.utils.misc._load_img_as_tensor``: Pillow's ``resize`` to S x S,
/ 255 in float64, then float32) does, so the masks equal the JPEG-folder path's on the same
pixels. Only the frame asked for is pulled (and any skipped before it): beyond the first 16 frames
(below) nothing is buffered beyond what the streaming loader's window and decode-ahead queue
hold.

The length of a live source is unknown; SAM 2 reads its ``num_frames`` only to bound the
walk and the object-pointer window (``min(num_frames, 16)`` pointers): without ``num_frames``
the first 16 frames are read at the start, so a shorter source gets its exact length and a
longer one runs as SAM 2 runs any video of 16 frames or more; the walk ends when the iterable
does. A frame of another size or type, or an exception raised by the iterable, ends the run with
:class:`FrameSourceError` naming the frame.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

__all__ = ["LiveSource", "FrameSourceEnded", "FrameSourceError", "UNKNOWN_LENGTH"]

#: ``num_frames`` SAM 2 is told for a source of unknown length (the walk ends with the source)
UNKNOWN_LENGTH = 2**31 - 1
#: frames read at the start of a source of unknown length: SAM 2's object-pointer window
#: (``min(num_frames, max_obj_ptrs_in_encoder=16)``) is the only use of the length that changes
#: the masks, so a source that ends within them gets its exact length
LOOKAHEAD = 16


class FrameSourceEnded(Exception):
    """The iterable stopped before the frame asked for (``frames``: how many it gave)."""

    def __init__(self, frames: int) -> None:
        super().__init__(f"the frame source ended after {frames} frames")
        self.frames = frames


class FrameSourceError(RuntimeError):
    """The iterable raised, or gave a frame that is not like the first; ``frames_read``: the
    frames read before it."""

    def __init__(self, msg: str, frames_read: int) -> None:
        super().__init__(msg)
        self.frames_read = frames_read


def _shape_error(t: int, a: Any, want: tuple[int, int] | None) -> str | None:
    """Why frame ``t`` is not an H x W x 3 uint8 array (of the first frame's H x W), or None."""
    size = f"{want[0]} x {want[1]} x 3" if want else "H x W x 3"
    if not isinstance(a, np.ndarray):
        return f"frames[{t}]: a {size} uint8 RGB array, got {type(a).__name__}"
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or 0 in a.shape:
        return f"frames[{t}]: a {size} uint8 RGB array, got shape {a.shape} dtype {a.dtype}"
    if want and a.shape[:2] != want:
        return f"frames[{t}]: every frame {size} like frame 0, got shape {a.shape}"
    return None


class LiveSource:
    """An iterable of frames read once, in order (thread-safe: the decode-ahead worker and the
    caller may ask).

    Without ``num_frames`` the first :data:`LOOKAHEAD` frames are read at the start (held as
    they came, uint8, until asked for): a source that ends within them has its exact length, as
    SAM 2 would read it from a folder (it matters to SAM 2 only below 16 frames); a longer one
    runs as any video of 16 frames or more.
    """

    def __init__(self, frames: Iterable[Any], num_frames: int | None = None) -> None:
        from sam2tune.errors import InputError

        self._it: Iterator[Any] = iter(frames)
        self._lock = threading.Lock()
        self._next = 0  # index of the next frame the iterable gives
        self._held: dict[int, Any] = {}  # read from the iterable, not asked for yet
        self.ended: int | None = None  # frames given, once it stopped
        first = self._pull()
        if first is None:
            raise InputError("frames: the iterable gave no frame")
        bad = _shape_error(0, first, None)
        if bad:
            raise InputError(bad)
        self.height, self.width = int(first.shape[0]), int(first.shape[1])
        self._held[0] = first
        self.length_known = num_frames is not None
        self._error: FrameSourceError | None = None  # raised in the look-ahead: kept for its frame
        if num_frames is None:
            while self.ended is None and self._next < LOOKAHEAD and self._error is None:
                try:
                    a = self._pull()
                except FrameSourceError as e:
                    self._error = e
                    break
                if a is not None:
                    self._held[self._next - 1] = a
        short = self.ended is not None and num_frames is None
        self.num_frames = (
            int(num_frames) if num_frames is not None else self._next if short else UNKNOWN_LENGTH
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(frames, height, width) as a video path's would read (frames: UNKNOWN_LENGTH if
        not known)."""
        return self.num_frames, self.height, self.width

    def _pull(self) -> Any:
        try:
            a = next(self._it)
        except StopIteration:
            self.ended = self._next
            return None
        except Exception as e:  # the source's own failure, named with the frame
            raise FrameSourceError(
                f"frames[{self._next}]: the frame source raised {type(e).__name__}: {e}",
                self._next,
            ) from e
        self._next += 1
        return a

    def read(self, t: int) -> np.ndarray:
        """Frame ``t`` (frames before it that nobody asked for are dropped). Raises
        :class:`FrameSourceEnded` past the end, :class:`FrameSourceError` for a frame read
        already (a live source is never re-read) or a malformed one."""
        with self._lock:
            for i in [i for i in self._held if i < t]:
                del self._held[i]
            a = self._held.pop(t, None)
            if a is None and t < self._next:
                raise FrameSourceError(
                    f"frames[{t}]: read already; a live source is read once, forward only "
                    "(re-prompting a tracked frame or reverse propagation needs a video file)",
                    self._next,
                )
            while a is None:
                if self._error is not None:
                    raise self._error
                if self.ended is not None:
                    raise FrameSourceEnded(self.ended)
                index = self._next
                a = self._pull()
                if a is None:
                    raise FrameSourceEnded(self._next)
                if index != t:
                    a = None
        bad = _shape_error(t, a, (self.height, self.width))
        if bad:
            raise FrameSourceError(bad, t)
        return a

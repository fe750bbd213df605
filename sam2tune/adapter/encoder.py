"""The image encoder's share of each propagation step, timed without copying or changing SAM 2's
code: for the duration of a session the predictor *instance*'s encoder entry point is wrapped
(Meta's ``SAM2Base.forward_image``: trunk, FPN neck and the decoder's high-resolution
projections; transformers' ``Sam2VideoModel.get_image_features``: the same modules) and put back
afterwards.

Each call is timed: on the CPU by ``time.perf_counter`` around it; on CUDA by a pair of
``torch.cuda.Event`` recorded on the current stream around it, read after the step, which
already synchronised the device when its masks were copied to the host (no synchronisation is
added per call). Calls outside a step (``init_state``'s warm-up of frame 0, prompts) are counted
in no frame's figure: :meth:`EncoderTimer.begin_step` starts each step at zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import torch

from sam2tune.adapter.hf import HFPredictor, hf_encoder_entry

__all__ = ["EncoderTimer", "encoder_entry"]


def encoder_entry(predictor: Any) -> tuple[Any, str] | None:
    """``(object, attribute)`` of the predictor's image-encoder call; None when it has none
    (the split is then absent, not guessed)."""
    if isinstance(predictor, HFPredictor):
        return hf_encoder_entry(predictor)
    if callable(getattr(predictor, "forward_image", None)):
        return predictor, "forward_image"
    return None


class EncoderTimer:
    """Accumulates the encoder's time within one step at a time; a context manager that wraps
    the entry point on entry and restores it on exit (exceptions included)."""

    def __init__(self, owner: Any, name: str, cuda: bool) -> None:
        self.owner, self.name, self.cuda = owner, name, cuda
        self._cpu_s = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._had_own = name in vars(owner)  # an instance attribute already (e.g. compiled)
        self._saved: Any = vars(owner).get(name)

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.cuda:
                start = torch.cuda.Event(enable_timing=True)
                start.record()
                out = fn(*args, **kwargs)
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                self._events.append((start, end))
                return out
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self._cpu_s += time.perf_counter() - t0
            return out

        return timed

    def __enter__(self) -> EncoderTimer:
        setattr(self.owner, self.name, self._wrap(getattr(self.owner, self.name)))
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._had_own:
            setattr(self.owner, self.name, self._saved)
        else:
            delattr(self.owner, self.name)  # the class's method shows through again

    def begin_step(self) -> None:
        """Start a step's count at zero (what ran before it belongs to no frame)."""
        self._cpu_s = 0.0
        self._events.clear()

    def step_s(self) -> float:
        """The encoder's time in the step just done (s). On CUDA the step's mask copy to the
        host has synchronised the device, so the events are complete; ``synchronize`` on one
        that were not would only wait for that event."""
        total = self._cpu_s
        for start, end in self._events:
            if not end.query():
                end.synchronize()
            total += start.elapsed_time(end) / 1000.0
        return total

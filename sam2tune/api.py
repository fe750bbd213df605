"""The public API: every configuration ``recommend`` / ``tune`` / ``lookup`` may choose, in your
own pipeline.

    import sam2tune

    predictor = sam2tune.build_predictor("sam2.1_large", checkpoint, "cuda", image_size=1024)
    prompts = [dict(frame_idx=0, obj_id=1, box=[40, 30, 100, 90])]
    for frame_idx, obj_ids, mask_logits in sam2tune.propagate(
        predictor, "video_frames/", prompts, strategy="stream", offload_state_to_cpu=True
    ):
        masks = (mask_logits[:, 0] > 0.0).cpu().numpy()

Build-time knobs (``image_size``, ``max_cond_frames_in_attn``, the ``predictor`` variant, the
implementation, a bf16 transformers model) go to :func:`build_predictor`; run-time knobs (the
offloads, ``dtype`` autocast, ``strategy``, segments, prefetch, transformers' vision-feature cache)
to :func:`propagate`. ``stock`` is SAM 2's own ``init_state`` + ``propagate_in_video``;
``release`` drops per-frame outputs no later frame reads; ``stream`` also decodes frames on demand
instead of loading the whole video. All three yield the same values (bit-identical mask logits;
tested). A predictor from SAM 2's own ``build_sam2_video_predictor`` works too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from sam2tune.config.schema import (
    DTYPES,
    IMPLS,
    MAX_PREFETCH,
    PREDICTORS,
    STRATEGIES,
    cuda_refusal,
)

__all__ = ["build_predictor", "propagate", "STRATEGIES", "PREDICTORS", "IMPLS"]

_KEYS = {"frame_idx", "obj_id", "points", "labels", "box", "mask"}


def _video_shape(video_path: Any) -> tuple[int, int, int]:
    """(frames, height, width) of a JPEG folder or an mp4, read from headers only."""
    from sam2tune.errors import InputError
    from sam2tune.video.sources import count_frames, jpeg_frames

    if not isinstance(video_path, str | os.PathLike):
        got = type(video_path).__name__
        raise InputError(
            f"video_path: a JPEG folder, an mp4 path or an iterable of frames, got {got}"
        )
    path = os.path.expanduser(os.fspath(video_path))
    if not os.path.exists(path):
        raise InputError(f"video_path: no such file or folder {path!r}")
    if os.path.isdir(path):
        frames = jpeg_frames(path)
        if not frames:
            raise InputError(f"video_path: no <index>.jpg frames in {path!r}")
        from PIL import Image

        with Image.open(frames[0]) as im:
            w, h = im.size
        return len(frames), h, w
    if not path.lower().endswith(".mp4"):
        raise InputError(f"video_path: {path!r} is neither a JPEG folder nor an .mp4 file")
    import cv2

    n = count_frames(path)  # refuses a file without frames, in one line
    cap = cv2.VideoCapture(path)
    h, w = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    cap.release()
    return n, h, w


def _int(i: int, key: str, v: Any) -> int:
    """An integer prompt field (an integral float such as 3.0 too), named when it is not."""
    ok = isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)
    if not ok and isinstance(v, float | np.floating) and float(v).is_integer():
        ok = True
    if not ok:
        raise _err(f"prompts[{i}].{key}: an integer, got {v!r}")
    return int(v)


def _whole(name: str, v: Any) -> int:
    """An integer argument (not a bool, not a fractional float), named when it is not."""
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise _err(f"{name}: an integer, got {v!r}")
    return int(v)


def _numbers(i: int, key: str, v: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A finite float array of ``shape`` (-1 = any length >= 1), named when it is not."""
    if isinstance(v, str | bytes):
        raise _err(f"prompts[{i}].{key}: numbers, got a string")
    try:
        a = np.asarray(v, np.float64)
    except (TypeError, ValueError):
        raise _err(f"prompts[{i}].{key}: numbers, got {v!r}") from None
    want = " x ".join("N" if n == -1 else str(n) for n in shape)
    fits = a.ndim == len(shape) and all(n in (-1, m) for n, m in zip(shape, a.shape, strict=False))
    if not fits or a.size == 0:
        raise _err(f"prompts[{i}].{key}: {want} numbers, got shape {tuple(a.shape)}")
    if not np.isfinite(a).all():
        raise _err(f"prompts[{i}].{key}: finite numbers, got {v!r}")
    return a


def _prompt(i: int, d: Mapping[str, Any], video: tuple[int, int, int]) -> Any:
    """One prompt checked against the video (frames, height, width): frame index in range,
    integer object id, points / box inside the frame, labels 0 or 1, a mask of the video's size;
    each refusal names the prompt's index and field."""
    from sam2tune.scenario import Prompt

    n, h, w = video
    if not isinstance(d, Mapping):
        raise _err(f"prompts[{i}]: a dict with SAM 2's argument names, got {type(d).__name__}")
    unknown = set(d) - _KEYS
    if unknown:
        raise _err(
            f"prompts[{i}]: unknown key(s) {', '.join(sorted(unknown))} "
            f"(SAM 2's names: {', '.join(sorted(_KEYS))})"
        )
    for k in ("frame_idx", "obj_id"):
        if d.get(k) is None:
            raise _err(f"prompts[{i}]: {k} is required")
    frame, obj = _int(i, "frame_idx", d["frame_idx"]), _int(i, "obj_id", d["obj_id"])
    if not 0 <= frame < n:
        raise _err(f"prompts[{i}].frame_idx: must be in 0..{n - 1} (the video has {n} frames), "
                   f"got {frame}")
    if d.get("mask") is not None:
        if any(d.get(k) is not None for k in ("points", "box", "labels")):
            raise _err(f"prompts[{i}]: a mask prompt takes no points, labels or box (SAM 2)")
        m = np.asarray(d["mask"])
        if m.shape != (h, w):
            raise _err(f"prompts[{i}].mask: an H x W = {h} x {w} array (the video's size), got "
                       f"shape {tuple(m.shape)}")
        return Prompt(frame, obj, "mask", mask=m.astype(bool))
    points, labels = d.get("points"), d.get("labels")
    if (points is None) != (labels is None):
        raise _err(f"prompts[{i}]: points and labels go together")
    pts = lbl = None
    if points is not None:
        pa = _numbers(i, "points", points, (-1, 2))
        la = _numbers(i, "labels", labels, (-1,))
        if len(pa) != len(la):
            raise _err(f"prompts[{i}]: {len(pa)} points but {len(la)} labels")
        if not set(la.tolist()) <= {0.0, 1.0}:
            raise _err(f"prompts[{i}].labels: 1 (positive) or 0 (negative), got {la.tolist()}")
        out = [(x, y) for x, y in pa.tolist() if not (0 <= x <= w and 0 <= y <= h)]
        if out:
            raise _err(f"prompts[{i}].points: {out[0]} lies outside the {w} x {h} frame")
        pts, lbl = pa.tolist(), [int(v) for v in la.tolist()]
    if d.get("box") is not None:
        x0, y0, x1, y1 = _numbers(i, "box", d["box"], (4,)).tolist()
        if not (x0 < x1 and y0 < y1):
            raise _err(f"prompts[{i}].box: [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got "
                       f"{[x0, y0, x1, y1]}")
        if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
            raise _err(f"prompts[{i}].box: {[x0, y0, x1, y1]} lies outside the {w} x {h} frame")
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:  # e.g. a 1080p box on a 270p video
            raise _err(f"prompts[{i}].box: {[x0, y0, x1, y1]} reaches beyond the {w} x {h} frame "
                       f"(corners must lie in 0..{w} x 0..{h}: the video's own pixels)")
        return Prompt(frame, obj, "box", box=[x0, y0, x1, y1], points=pts, labels=lbl)
    if pts is None:
        raise _err(f"prompts[{i}]: give points + labels, a box, or a mask")
    return Prompt(frame, obj, "points", points=pts, labels=lbl)


def _err(msg: str) -> Exception:
    from sam2tune.errors import InputError

    return InputError(msg)


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise _err(f"{name}: one of {', '.join(choices)}, got {value!r}")
    return str(value)


def build_predictor(
    model: str = "sam2.1_tiny",
    checkpoint: str | None = None,
    device: str | Any = "cuda",
    *,
    image_size: int | None = None,
    max_cond_frames_in_attn: int = -1,
    predictor: str = "per_object",
    impl: str = "sam2",
    dtype: str = "float32",
) -> Any:
    """A video predictor for the build-time knobs of an answer.

    Args:
        model: a model preset (``sam2.1_tiny`` ... ``sam2.1_large``, ``sam2_*``).
        checkpoint: Meta's checkpoint file (a ``.pt`` with a ``model`` state dict); None = the
            file ``sam2tune download`` caches, else random-init weights (said on stderr: masks
            are meaningless, memory and speed faithful).
        device: ``"cuda"``, ``"cpu"`` or a ``torch.device``.
        image_size: the model's input resolution (multiple of 16; None = the preset's, 1024).
        max_cond_frames_in_attn: SAM 2's ``++model.max_cond_frames_in_attn`` (-1 = all).
        predictor: ``per_object`` (SAM 2's ``SAM2VideoPredictor``) or ``legacy_batched``.
        impl: ``sam2`` (Meta's) or ``transformers`` (``Sam2VideoModel`` with Meta's weights
            converted by name; SAM 2.1 presets only).
        dtype: transformers only: the model's dtype (``bfloat16`` builds a bf16 model); Meta's
            sam2 takes ``dtype`` at :func:`propagate` (autocast).

    Returns:
        SAM 2's predictor (``impl=sam2``) or sam2tune's transformers predictor, for
        :func:`propagate`.

    Raises:
        sam2tune.errors.InputError: a bad argument, named (one line).
    """
    import sys

    from sam2tune.adapter.impls import build_impl
    from sam2tune.paths import cache_dir

    dev = _device(device)
    cfg, knobs = _build_settings(
        model, checkpoint, image_size, max_cond_frames_in_attn, predictor, impl, dtype
    )
    built = build_impl(impl, cfg, knobs, dev, cache_dir())
    if built.weights == "random-init":
        print(
            f"sam2tune: {model} has random-init weights (no checkpoint given or cached): masks "
            "are meaningless; memory and speed are faithful",
            file=sys.stderr,
        )
    return built.predictor


def _device(device: Any) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise _err(f"device: {device!r} is not a torch device ({e})") from None
    why = cuda_refusal(str(dev))  # in one line, not deep in torch's lazy CUDA init
    if why is not None:
        raise _err(f"device: {device!r}: {why}")
    return dev


def _build_settings(
    model: str, checkpoint: Any, image_size: int | None, max_cond_frames_in_attn: int,
    predictor: str, impl: str, dtype: str,
) -> tuple[Any, Any]:
    """The model preset and build-time knobs of :func:`build_predictor`'s arguments (checked,
    each refusal naming its argument)."""
    from sam2tune.config.presets import model_preset
    from sam2tune.config.schema import KnobsConfig

    _choice("predictor", predictor, PREDICTORS)
    _choice("impl", impl, IMPLS)
    _choice("dtype", dtype, DTYPES)
    if checkpoint is not None and not isinstance(checkpoint, str | bytes) and not hasattr(
        checkpoint, "__fspath__"
    ):
        raise _err(f"checkpoint: a file path, got {type(checkpoint).__name__}")
    extra: dict[str, Any] = {"checkpoint": None if checkpoint is None else str(checkpoint)}
    if image_size is not None:
        extra["image_size"] = _whole("image_size", image_size)
    try:
        cfg = model_preset(model, **extra)
        knobs = KnobsConfig(
            max_cond_frames_in_attn=_whole("max_cond_frames_in_attn", max_cond_frames_in_attn),
            predictor=predictor, dtype=dtype,
        )
    except ValueError as e:
        raise _err(str(e).removeprefix("sam2tune: error: ")) from None
    if impl == "sam2" and dtype != "float32":
        raise _err(
            "dtype: Meta's sam2 is built in float32 and runs bfloat16 as autocast: pass "
            f"dtype={dtype!r} to sam2tune.propagate"
        )
    if impl == "transformers" and predictor != "per_object":
        raise _err("predictor: transformers' Sam2VideoModel has no legacy batched predictor")
    return cfg, knobs


def _is_hf(predictor: Any) -> bool:
    from sam2tune.adapter.hf import HFPredictor

    return isinstance(predictor, HFPredictor)


def propagate(
    predictor: Any,
    video_path: str | os.PathLike[str] | Iterable[np.ndarray],
    prompts: Sequence[Mapping[str, Any]],
    strategy: str | None = None,
    segment_frames: int = 0,
    prefetch: int = 4,
    *,
    offload_video_to_cpu: bool = False,
    offload_state_to_cpu: bool = False,
    dtype: str | None = None,
    vision_features_cache: int = 1,
    num_frames: int | None = None,
    object_batch: int = 1,
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """Prompt and propagate forward through a video, yielding what SAM 2's loop yields.

    Args:
        predictor: from :func:`build_predictor`, or SAM 2's own ``build_sam2_video_predictor``.
        video_path: a folder of ``<index>.jpg`` frames or an mp4 (SAM 2's inputs), or frames
            from anywhere: an iterable of H x W x 3 uint8 RGB arrays (camera, network stream,
            OpenCV / PyAV) read once, in order, in ``stream``'s bounded memory, until it ends
            (:mod:`sam2tune.video.live`).
        prompts: dicts with SAM 2's names: ``frame_idx``, ``obj_id`` and ``points`` +
            ``labels``, or ``box`` (optionally with points), or ``mask``; video pixels. Objects
            first prompted later are added when propagation reaches them, with their later
            prompts.
        strategy: ``stock`` (SAM 2's own loop; default for a path), ``release`` or ``stream``
            (bounded memory; the only one, and the default, for an iterable).
        segment_frames: > 0: sessions of this many frames, each seeded with the last masks.
        prefetch: ``stream``: frames decoded ahead by threads (0..64); no effect on values.
        offload_video_to_cpu, offload_state_to_cpu: frames / per-object state in host RAM.
        dtype: ``float32`` or ``bfloat16`` (Meta's sam2: autocast around each step;
            transformers: the model's own dtype, which it must match). None = the predictor's.
        vision_features_cache: transformers only: frames of vision features it keeps.
        num_frames: an iterable's length where known (SAM 2's walk and, below 16, pointers).
        object_batch: objects tracked at once (1 = SAM 2.1's loop; 0 = all of a group).

    Yields:
        ``(frame_idx, obj_ids, mask_logits)``: logits (objects, 1, H, W) at the video's size.

    Raises:
        sam2tune.errors.InputError (a ValueError): a bad argument or prompt (named by its
            index), at the call, before any frame is loaded (an iterable's first is read).
        sam2tune.video.live.FrameSourceError: the iterable raised or gave a frame unlike the
            first (named by its index), after the frames before it were yielded.
    """
    hf = _is_hf(predictor)
    source, strategy = _source(video_path, strategy, segment_frames, hf, num_frames)
    dtype = _check_run(predictor, hf, prompts, strategy, segment_frames, prefetch, dtype,
                       vision_features_cache)
    video = source.shape if source is not None else _video_shape(video_path)
    ps = [_prompt(i, d, video) for i, d in enumerate(prompts)]
    knobs = _knobs(strategy=strategy, segment_frames=int(segment_frames),
                   stream_prefetch=int(prefetch), offload_video_to_cpu=bool(offload_video_to_cpu),
                   offload_state_to_cpu=bool(offload_state_to_cpu), dtype=dtype,
                   vision_features_cache=int(vision_features_cache),
                   object_batch=_whole("object_batch", object_batch))
    where: Any = source if source is not None else os.fspath(video_path)  # type: ignore[arg-type]
    return _frames(_session(predictor, where, knobs, hf, video[0]), ps, knobs, hf, source)


def _knobs(**kw: Any) -> Any:
    """The run-time knobs as a ``KnobsConfig`` (its own checks, as one line)."""
    from sam2tune.config.schema import KnobsConfig

    try:
        return KnobsConfig(**kw)
    except (TypeError, ValueError) as e:
        raise _err(str(e).removeprefix("sam2tune: error: ")) from None


def _source(
    video: Any, strategy: str | None, segment_frames: Any, hf: bool, num_frames: Any
) -> tuple[Any, str]:
    """A :class:`~sam2tune.video.live.LiveSource` when ``video`` is an iterable of frames (None
    for a path), and the strategy to run (``stream`` for an iterable, ``stock`` for a path
    unless one is named)."""
    if isinstance(video, str | bytes | os.PathLike) or not isinstance(video, Iterable):
        if num_frames is not None:
            raise _err("num_frames: only for an iterable of frames (a path has its own length)")
        return None, "stock" if strategy is None else strategy
    from sam2tune.video.live import LiveSource

    if hf:
        raise _err("video_path: an iterable of frames needs Meta's sam2 (its stream strategy)")
    if strategy not in (None, "stream") or segment_frames:
        raise _err(
            f"strategy: an iterable of frames is read once, forward: strategy='stream' and no "
            f"segments, got strategy={strategy!r}, segment_frames={segment_frames!r}"
        )
    if num_frames is not None and (_whole("num_frames", num_frames) < 1):
        raise _err(f"num_frames: an integer >= 1, got {num_frames!r}")
    return LiveSource(video, num_frames), "stream"


def _check_run(
    predictor: Any, hf: bool, prompts: Any, strategy: str, segment_frames: Any, prefetch: Any,
    dtype: str | None, vision_features_cache: Any,
) -> str:
    """:func:`propagate`'s arguments other than the prompts, checked; the dtype to run in."""
    _choice("strategy", strategy, STRATEGIES)
    if isinstance(prompts, Mapping | str | bytes) or not isinstance(prompts, Sequence):
        raise _err(f"prompts: a list of dicts (one per prompt), got {type(prompts).__name__}")
    if not prompts:
        raise _err("prompts: give at least one prompt")
    for name, v, hi in (("prefetch", prefetch, MAX_PREFETCH), ("segment_frames", segment_frames,
                                                                None)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or (hi and v > hi):
            bound = f"0..{hi}" if hi else ">= 0"
            raise _err(f"{name}: an integer {bound}, got {v!r}")
    if not hf and not all(hasattr(predictor, a) for a in ("init_state", "propagate_in_video")):
        raise _err(
            f"predictor: a SAM 2 video predictor (sam2tune.build_predictor), got "
            f"{type(predictor).__name__}"
        )
    if dtype is not None:
        _choice("dtype", dtype, DTYPES)
    if not hf:
        if vision_features_cache != 1:
            raise _err("vision_features_cache: Meta's sam2 keeps exactly one frame's features (1)")
        return dtype or "float32"
    own = "bfloat16" if str(predictor.dtype) == "torch.bfloat16" else "float32"
    if dtype is not None and dtype != own:
        raise _err(
            f"dtype: transformers' model was built in {own}; build it with "
            f"build_predictor(..., impl='transformers', dtype={dtype!r})"
        )
    if strategy != "stock" or segment_frames:
        raise _err(
            "strategy: transformers' session has no bounded-memory strategies or segments "
            "(strategy='stock', segment_frames=0)"
        )
    return own


def _session(predictor: Any, video_path: str, knobs: Any, hf: bool, num_frames: int) -> Any:
    if hf:
        from sam2tune.adapter.hf import HFSession

        return HFSession(predictor, video_path, knobs)
    from sam2tune.adapter.segments import SegmentedSession
    from sam2tune.adapter.session import Session

    if knobs.segment_frames:  # the frame count _video_shape already read
        return SegmentedSession(predictor, video_path, knobs, num_frames)
    return Session(predictor, video_path, knobs)


def _frames(
    sess: Any, ps: list[Any], knobs: Any, hf: bool, source: Any = None
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """The session's frames, each step run under the knobs' autocast (entered and left around
    every step, so the caller's own code between frames runs without it); a live source that
    ends stops the walk there (a warning if it ends short of the ``num_frames`` given)."""
    from sam2tune.video.live import FrameSourceEnded

    try:
        yield from _steps(sess, ps, knobs, hf)
    except FrameSourceEnded as e:
        if source is not None and source.length_known and e.frames < source.num_frames:
            import warnings

            warnings.warn(
                f"frames: the source ended after {e.frames} of the num_frames="
                f"{source.num_frames} given; masks for those {e.frames} frames were yielded",
                stacklevel=2,
            )


def _steps(
    sess: Any, ps: list[Any], knobs: Any, hf: bool
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    from sam2tune.adapter.session import FrameStep

    dev = sess.predictor.device
    bf16 = knobs.dtype == "bfloat16" and not hf
    amp = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    with amp():
        sess.init()
    steps = sess.track(ps, keep_logits=True)
    try:
        while True:
            with amp():
                ev = next(steps, None)
            if ev is None:
                return
            if isinstance(ev, FrameStep):
                assert ev.logits is not None
                yield ev.frame_idx, ev.obj_ids, ev.logits
    finally:
        steps.close()
        sess.close()

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

from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

__all__ = ["build_predictor", "propagate", "STRATEGIES", "PREDICTORS", "IMPLS"]

STRATEGIES = ("stock", "release", "stream")
PREDICTORS = ("per_object", "legacy_batched")
IMPLS = ("sam2", "transformers")
DTYPES = ("float32", "bfloat16")
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

    import torch

    from sam2tune.adapter.build import build_impl
    from sam2tune.config.presets import model_preset
    from sam2tune.config.schema import KnobsConfig
    from sam2tune.paths import cache_dir

    _choice("predictor", predictor, PREDICTORS)
    _choice("impl", impl, IMPLS)
    _choice("dtype", dtype, DTYPES)
    if checkpoint is not None and not isinstance(checkpoint, str | bytes) and not hasattr(
        checkpoint, "__fspath__"
    ):
        raise _err(f"checkpoint: a file path, got {type(checkpoint).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise _err(f"device: {device!r} is not a torch device ({e})") from None
    extra: dict[str, Any] = {"checkpoint": None if checkpoint is None else str(checkpoint)}
    if image_size is not None:
        extra["image_size"] = int(image_size)
    try:
        cfg = model_preset(model, **extra)
        knobs = KnobsConfig(
            max_cond_frames_in_attn=int(max_cond_frames_in_attn), predictor=predictor,
            dtype=dtype,
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
    built = build_impl(impl, cfg, knobs, dev, cache_dir())
    if built.weights == "random-init":
        print(
            f"sam2tune: {model} has random-init weights (no checkpoint given or cached): masks "
            "are meaningless; memory and speed are faithful",
            file=sys.stderr,
        )
    return built.predictor


def _is_hf(predictor: Any) -> bool:
    from sam2tune.adapter.hf import HFPredictor

    return isinstance(predictor, HFPredictor)


def propagate(
    predictor: Any,
    video_path: str,
    prompts: Sequence[Mapping[str, Any]],
    strategy: str = "stock",
    segment_frames: int = 0,
    prefetch: int = 4,
    *,
    offload_video_to_cpu: bool = False,
    offload_state_to_cpu: bool = False,
    dtype: str | None = None,
    vision_features_cache: int = 1,
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """Prompt and propagate forward through a video, yielding what SAM 2's
    ``propagate_in_video`` yields.

    Args:
        predictor: from :func:`build_predictor`, or SAM 2's own ``build_sam2_video_predictor``.
        video_path: a folder of ``<index>.jpg`` frames or an mp4 file (SAM 2's inputs).
        prompts: dicts with SAM 2's argument names: ``frame_idx``, ``obj_id`` and ``points`` +
            ``labels``, or ``box`` (optionally with points), or ``mask``; coordinates in video
            pixels. Objects first prompted after the first frame are added when propagation
            reaches them; an object's later prompts are given when it is added.
        strategy: ``stock`` (SAM 2's own ``init_state`` + ``propagate_in_video``), ``release``
            or ``stream`` (bounded memory; Meta's sam2 only).
        segment_frames: > 0 splits the video into sessions of this many frames (each seeded
            with the previous one's last masks; not bit-identical to one session).
        prefetch: ``stream`` only: frames decoded ahead by as many background threads (a
            bounded queue, so the loop waits on decoding only when the decoder is slower than
            SAM 2); 0 decodes in the loop. The values yielded do not depend on it.
        offload_video_to_cpu: keep the frames in host RAM (SAM 2's ``init_state`` argument;
            transformers' ``video_storage_device="cpu"``).
        offload_state_to_cpu: keep the per-object state in host RAM (SAM 2's ``init_state``
            argument; transformers' ``inference_state_device="cpu"``).
        dtype: ``float32`` or ``bfloat16`` (Meta's sam2: ``torch.autocast`` around prompts and
            propagation, as SAM 2's examples do; transformers: the model's own dtype, which it
            must match). None = the predictor's own.
        vision_features_cache: transformers only: frames of vision features kept
            (``max_vision_features_cache_size``); Meta's sam2 keeps one.

    Yields:
        ``(frame_idx, obj_ids, mask_logits)``: mask logits (objects, 1, H, W) at the video's
        resolution, objects in ``obj_ids`` order, on the predictor's device.

    Raises:
        sam2tune.errors.InputError (a ValueError): a bad argument or a malformed prompt (named
            by its index), at the call, before any frame is loaded.
    """
    from sam2tune.config.schema import KnobsConfig

    _choice("strategy", strategy, STRATEGIES)
    if not prompts:
        raise _err("prompts: give at least one prompt")
    if int(prefetch) < 0:
        raise _err(f"prefetch: must be >= 0 (0 = decode in the loop), got {prefetch}")
    hf = _is_hf(predictor)
    if dtype is not None:
        _choice("dtype", dtype, DTYPES)
    if hf:
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
        dtype = own
    elif vision_features_cache != 1:
        raise _err("vision_features_cache: Meta's sam2 keeps exactly one frame's features (1)")
    try:
        ps = [_prompt(i, d) for i, d in enumerate(prompts)]
        knobs = KnobsConfig(
            strategy=strategy, segment_frames=int(segment_frames), stream_prefetch=int(prefetch),
            offload_video_to_cpu=bool(offload_video_to_cpu),
            offload_state_to_cpu=bool(offload_state_to_cpu), dtype=dtype or "float32",
            vision_features_cache=int(vision_features_cache),
        )
    except (TypeError, ValueError) as e:
        raise _err(str(e).removeprefix("sam2tune: error: ")) from None
    return _frames(_session(predictor, video_path, knobs, hf), ps, knobs, hf)


def _session(predictor: Any, video_path: str, knobs: Any, hf: bool) -> Any:
    if hf:
        from sam2tune.adapter.hf import HFSession

        return HFSession(predictor, video_path, knobs)
    from sam2tune.adapter.segments import SegmentedSession
    from sam2tune.adapter.session import Session

    if knobs.segment_frames:
        from sam2tune.video.sources import count_frames

        return SegmentedSession(predictor, video_path, knobs, count_frames(video_path))
    return Session(predictor, video_path, knobs)


def _frames(
    sess: Any, ps: list[Any], knobs: Any, hf: bool
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """The session's frames, each step run under the knobs' autocast (entered and left around
    every step, so the caller's own code between frames runs without it)."""
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

"""The second implementation: Hugging Face ``transformers``' SAM 2 video model
(``Sam2VideoModel`` / ``Sam2VideoProcessor``), behind the same session interface as
:class:`sam2tune.adapter.session.Session`. This module is the only code that touches
``transformers``' internals.

* :func:`hf_config` builds ``Sam2VideoConfig`` from Meta's packaged YAML of the same model
  (Hiera trunk, image size), so both implementations build the same architecture.
* :func:`convert_state_dict` maps Meta's parameter names onto transformers' (rules written from the
  two models' own ``state_dict`` names), so both run with identical weights: a real checkpoint, or
  Meta's random-init weights drawn from ``model.weights_seed``.
* :class:`HFSession` runs one video: ``init_video_session``, prompts with
  ``add_inputs_to_inference_session`` + a forward on the prompted frame, then
  ``propagate_in_video_iterator``; masks are post-processed with the processor's own
  ``post_process_masks``.

Knob mapping (sam2tune knob -> transformers):
``offload_video_to_cpu`` -> ``video_storage_device="cpu"``; ``offload_state_to_cpu`` ->
``inference_state_device="cpu"``; ``max_cond_frames_in_attn`` -> ``config.max_cond_frame_num``;
``dtype=bfloat16`` -> the model and the session in ``torch.bfloat16``;
``vision_features_cache`` -> ``max_vision_features_cache_size``. The knobs transformers lacks
are refused by :func:`sam2tune.config.schema.impl_refusal`.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sam2tune.adapter.build import BuiltPredictor, build_predictor
from sam2tune.adapter.census import Census, walk_tensors
from sam2tune.adapter.session import FrameStep, PromptStep, join_groups
from sam2tune.config.schema import KnobsConfig
from sam2tune.errors import InputError

if TYPE_CHECKING:
    from sam2tune.adapter.frames import StreamingFrames
    from sam2tune.config.schema import ModelConfig
    from sam2tune.scenario import Prompt

__all__ = [
    "HFPredictor",
    "HFSession",
    "build_hf",
    "build_sam3_tracker",
    "convert_state_dict",
    "hf_config",
    "hf_available",
    "hf_version",
    "hf_session_args",
    "hf_encoder_entry",
    "read_rgb_frames",
]


def hf_available() -> str | None:
    """None when ``transformers`` with SAM 2 video is importable, else why not (one line)."""
    try:
        from transformers import Sam2VideoModel  # noqa: F401
    except ImportError as e:
        return (
            f"impl=transformers needs transformers >= 5 with Sam2VideoModel "
            f"(pip install 'sam2tune[hf]'): {e}"
        )
    return None


def hf_version() -> str | None:
    """The installed ``transformers`` version (None when absent)."""
    try:
        import transformers
    except ImportError:
        return None
    return str(transformers.__version__)


# ---------------------------------------------------------------------------------------------
# configuration: Meta's YAML -> Sam2VideoConfig


def _meta_model_cfg(model: ModelConfig) -> dict[str, Any]:
    from omegaconf import OmegaConf

    res = importlib.resources.files("sam2") / model.config_file
    if not res.is_file():
        raise InputError(f"model.config_file: {model.config_file!r} is not in the sam2 package")
    root: Any = OmegaConf.create(res.read_text())
    cfg = OmegaConf.to_container(root["model"], resolve=False)
    assert isinstance(cfg, dict)
    return {str(k): v for k, v in cfg.items()}


def _hiera_defaults() -> dict[str, Any]:
    import inspect

    from sam2.modeling.backbones.hieradet import Hiera

    sig = inspect.signature(Hiera.__init__)
    return {k: p.default for k, p in sig.parameters.items() if p.default is not p.empty}


def hf_config(model: ModelConfig, knobs: KnobsConfig) -> Any:
    """``Sam2VideoConfig`` of the same architecture as Meta's ``model`` at ``model.image_size``,
    with ``max_cond_frame_num`` from ``knobs.max_cond_frames_in_attn``."""
    from transformers import Sam2VideoConfig

    meta = _meta_model_cfg(model)
    trunk = {**_hiera_defaults(), **meta["image_encoder"]["trunk"]}
    neck = meta["image_encoder"]["neck"]
    s = int(model.image_size)
    d, h = int(trunk["embed_dim"]), int(trunk["num_heads"])
    backbone = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": d,
        "num_attention_heads": h,
        "blocks_per_stage": list(trunk["stages"]),
        "embed_dim_per_stage": [d, 2 * d, 4 * d, 8 * d],
        "num_attention_heads_per_stage": [h, 2 * h, 4 * h, 8 * h],
        "window_size_per_stage": list(trunk["window_spec"]),
        "global_attention_blocks": list(trunk["global_att_blocks"]),
        "window_positional_embedding_background_size": list(
            trunk["window_pos_embed_bkg_spatial_size"]
        ),
        "image_size": [s, s],
    }
    vision = {
        "model_type": "sam2_vision_model",
        "backbone_config": backbone,
        "backbone_channel_list": list(neck["backbone_channel_list"]),
        "backbone_feature_sizes": [[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
    }
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config={"image_size": s},
        image_size=s,
        memory_attention_rope_feat_sizes=[s // 16, s // 16],
        max_cond_frame_num=knobs.max_cond_frames_in_attn,
        num_maskmem=int(meta.get("num_maskmem", 7)),
        max_object_pointers_in_encoder=int(meta.get("max_obj_ptrs_in_encoder", 16)),
    )


# ---------------------------------------------------------------------------------------------
# weights: Meta's state dict -> transformers' names

#: (Meta pattern, transformers replacement), applied in order to every Meta name; MLP layer
#: indices are handled by :func:`_mlp` (Meta's ``layers.0 .. layers.n-1`` are transformers'
#: ``proj_in``, ``layers.0 .. layers.n-3``, ``proj_out``)
_FUSER = "memory_encoder.memory_fuser.layers."
_RULES: list[tuple[str, str]] = [
    (r"^image_encoder\.trunk\.", "vision_encoder.backbone."),
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.", r"vision_encoder.neck.convs.\1."),
    (r"patch_embed\.proj\.", "patch_embed.projection."),
    (r"^sam_mask_decoder\.", "mask_decoder."),
    (r"^sam_prompt_encoder\.", "prompt_encoder."),
    (r"\.out_proj\.", ".o_proj."),
    (r"\.norm([1-4])\.", r".layer_norm\1."),
    (r"transformer\.norm_final_attn\.", "transformer.layer_norm_final_attn."),
    (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    (r"^prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (
        r"^prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$",
        "prompt_encoder.shared_embedding.positional_embedding",
    ),
    (r"^memory_attention\.norm\.", "memory_attention.layer_norm."),
    (r"^memory_encoder\.pix_feat_proj\.", "memory_encoder.feature_projection."),
    (r"^memory_encoder\.o_proj\.", "memory_encoder.projection."),
    (r"^memory_encoder\.fuser\.layers\.(\d+)\.dwconv\.", _FUSER + r"\1.depthwise_conv."),
    (r"^memory_encoder\.fuser\.layers\.(\d+)\.norm\.", _FUSER + r"\1.layer_norm."),
    (r"^memory_encoder\.fuser\.layers\.(\d+)\.pwconv([12])\.", _FUSER + r"\1.pointwise_conv\2."),
    (r"^memory_encoder\.fuser\.layers\.(\d+)\.gamma$", _FUSER + r"\1.scale"),
    (r"^maskmem_tpos_enc$", "memory_temporal_positional_encoding"),
    (r"^no_mem_embed$", "no_memory_embedding"),
    (r"^no_mem_pos_enc$", "no_memory_positional_encoding"),
    (r"^no_obj_embed_spatial$", "occlusion_spatial_embedding_parameter"),
    (r"^no_obj_ptr$", "no_object_pointer"),
    (r"^obj_ptr_proj\.", "object_pointer_proj."),
    (r"^obj_ptr_tpos_proj\.", "temporal_positional_encoding_projection_layer."),
]

#: Meta names that several transformers parameters share (the prompt encoder's random
#: Fourier features are also the image-wide positional embedding's)
_ALSO = {
    "prompt_encoder.shared_embedding.positional_embedding": [
        "shared_image_embedding.positional_embedding"
    ],
}

_MLP = re.compile(
    r"^(?P<pre>(?:.*\.)?(?:mlp|iou_prediction_head|pred_obj_score_head|"
    r"output_hypernetworks_mlps\.\d+|object_pointer_proj))\.layers\.(?P<i>\d+)\."
)


def _mlp(name: str, depth: dict[str, int]) -> str:
    m = _MLP.match(name)
    if m is None:
        return name
    pre, i = m["pre"], int(m["i"])
    n = depth[pre]
    new = "proj_in" if i == 0 else "proj_out" if i == n - 1 else f"layers.{i - 1}"
    return f"{pre}.{new}.{name[m.end() :]}"


def _downsampler(name: str, n_convs: int) -> str:
    """Meta's mask downsampler is one Sequential (conv, norm, act) x k + final conv."""
    m = re.match(r"^memory_encoder\.mask_downsampler\.encoder\.(\d+)\.(.*)$", name)
    if m is None:
        return name
    i, rest = int(m[1]), m[2]
    if i == 3 * n_convs:
        return f"memory_encoder.mask_downsampler.final_conv.{rest}"
    part = "conv" if i % 3 == 0 else "layer_norm"
    return f"memory_encoder.mask_downsampler.layers.{i // 3}.{part}.{rest}"


def _downsampler_convs(names: dict[str, torch.Tensor]) -> int:
    """Convolutions of Meta's mask downsampler: (conv, LayerNorm2d, GELU) x k, then the final
    conv at index 3k."""
    pat = re.compile(r"^memory_encoder\.mask_downsampler\.encoder\.(\d+)\.")
    return max((int(m[1]) for n in names if (m := pat.match(n))), default=0) // 3


def convert_state_dict(
    meta: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Meta's ``state_dict`` under transformers' names and shapes.

    Raises:
        ValueError: a Meta tensor with no place, a transformers tensor left unfilled, or a shape
            that does not match (the two models are not the same architecture).
    """
    renamed: dict[str, torch.Tensor] = {}
    for k, v in meta.items():
        n = k
        for pat, rep in _RULES:
            n = re.sub(pat, rep, n)
        renamed[n] = v
    depth: dict[str, int] = {}
    for n in renamed:
        m = _MLP.match(n)
        if m:
            depth[m["pre"]] = max(depth.get(m["pre"], 0), int(m["i"]) + 1)
    n_convs = _downsampler_convs(renamed)
    out: dict[str, torch.Tensor] = {}
    points: dict[int, torch.Tensor] = {}
    for n, v in renamed.items():
        pm = re.match(r"^prompt_encoder\.point_embeddings\.(\d+)\.weight$", n)
        if pm:  # four (1, C) embeddings -> one (4, C) table
            points[int(pm[1])] = v
            continue
        n = _downsampler(_mlp(n, depth), n_convs)
        out[n] = v
        for extra in _ALSO.get(n, []):
            out[extra] = v
    if points:
        out["prompt_encoder.point_embed.weight"] = torch.cat([points[i] for i in sorted(points)])
    unknown = sorted(set(out) - set(target))
    missing = sorted(set(target) - set(out))
    if unknown or missing:
        gone, left = ", ".join(unknown[:5]) or "-", ", ".join(missing[:5]) or "-"
        raise ValueError(f"convert_state_dict: no place for {gone}; unfilled {left}")
    for n, v in out.items():
        want = target[n].shape
        if v.shape != want:
            if v.numel() != target[n].numel():
                raise ValueError(
                    f"convert_state_dict: {n}: shape {tuple(v.shape)} vs {tuple(want)}"
                )
            out[n] = v.reshape(want)
    return out


# ---------------------------------------------------------------------------------------------
# build


@dataclass
class HFPredictor:
    """transformers' model and processor, with what the session needs."""

    model: Any  # Sam2VideoModel
    processor: Any  # Sam2VideoProcessor
    device: torch.device
    image_size: int
    dtype: torch.dtype


def hf_encoder_entry(predictor: HFPredictor) -> tuple[Any, str] | None:
    """The model's image-encoder call (``get_image_features``: vision encoder, FPN neck and the
    mask decoder's high-resolution projections, which ``_prepare_vision_features`` calls on a
    cache miss), as ``(object, attribute)`` for :class:`sam2tune.adapter.encoder.EncoderTimer`;
    None for a model without it."""
    if callable(getattr(predictor.model, "get_image_features", None)):
        return predictor.model, "get_image_features"
    return None


def _processor(image_size: int) -> Any:
    from transformers import Sam2ImageProcessor, Sam2VideoProcessor, Sam2VideoVideoProcessor

    size = {"height": image_size, "width": image_size}
    return Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size=size),
        video_processor=Sam2VideoVideoProcessor(size=size),
    )


def build_hf(
    model: ModelConfig, knobs: KnobsConfig, device: torch.device, cache_root: Any
) -> BuiltPredictor:
    """transformers' SAM 2 video model with Meta's weights for ``model`` (the checkpoint, or
    Meta's random-init weights from ``model.weights_seed``), converted by name."""
    from transformers import Sam2VideoModel

    why = hf_available()
    if why is not None:
        raise InputError(why)
    meta = build_predictor(model, KnobsConfig(), torch.device("cpu"), cache_root)
    cfg = hf_config(model, knobs)
    hf: Any = Sam2VideoModel(cfg)
    state = convert_state_dict(meta.predictor.state_dict(), hf.state_dict())
    hf.load_state_dict(state, strict=True)
    del meta.predictor
    dtype = torch.bfloat16 if knobs.dtype == "bfloat16" else torch.float32
    hf = hf.to(device=device, dtype=dtype).eval()
    nbytes = sum(p.numel() * p.element_size() for p in hf.parameters())
    nbytes += sum(b.numel() * b.element_size() for b in hf.buffers())
    pred = HFPredictor(hf, _processor(model.image_size), device, model.image_size, dtype)
    return BuiltPredictor(
        pred, meta.weights, meta.checkpoint_path, int(nbytes), hf_settings(knobs)
    )


def build_sam3_tracker(image_size: int, device: torch.device, seed: int = 0) -> HFPredictor:
    """SAM 3's tracker (``Sam3TrackerVideoModel``, 466 M parameters) at ``image_size`` (a
    multiple of its 14-px patches; its own is 1008), random-init from ``seed``: no SAM 3 weights
    can be loaded here (the hub is closed and no SAM 2 checkpoint converts to it). It runs through
    :class:`HFSession` like SAM 2.1 (same processor and session API)."""
    from transformers import (
        Sam2ImageProcessor,
        Sam2VideoVideoProcessor,
        Sam3TrackerVideoConfig,
        Sam3TrackerVideoModel,
        Sam3TrackerVideoProcessor,
    )

    if image_size % 14:
        raise InputError(f"image_size: SAM 3 needs a multiple of 14, got {image_size}")
    cfg = Sam3TrackerVideoConfig()
    cfg.image_size = image_size  # resizes every feature map with it
    torch.manual_seed(seed)
    model: Any = Sam3TrackerVideoModel(cfg)
    model = model.to(device).eval()
    size = {"height": image_size, "width": image_size}
    proc = Sam3TrackerVideoProcessor(
        image_processor=Sam2ImageProcessor(size=size),
        video_processor=Sam2VideoVideoProcessor(size=size),
    )
    return HFPredictor(model, proc, device, image_size, torch.float32)


def hf_settings(knobs: KnobsConfig) -> list[str]:
    """The transformers arguments these knobs set (shown in the report and the snippet)."""
    out = []
    if knobs.max_cond_frames_in_attn != -1:
        out.append(f"Sam2VideoConfig.max_cond_frame_num={knobs.max_cond_frames_in_attn}")
    out += hf_session_args(knobs)
    if knobs.dtype == "bfloat16":
        out.append("dtype=torch.bfloat16")
    return out


def hf_session_args(knobs: Any) -> list[str]:
    """The ``init_video_session`` arguments the memory knobs set (``knobs``: a
    ``KnobsConfig`` or a recommendation's candidate), as Python source."""
    out = []
    if knobs.offload_video_to_cpu:
        out.append('video_storage_device="cpu"')
    if knobs.offload_state_to_cpu:
        out.append('inference_state_device="cpu"')
    if knobs.vision_features_cache != 1:
        out.append(f"max_vision_features_cache_size={knobs.vision_features_cache}")
    return out


# ---------------------------------------------------------------------------------------------
# frames


def read_rgb_frames(video_path: str, start: int = 0, stop: int | None = None) -> list[Any]:
    """The video's frames as RGB PIL images (a JPEG folder in SAM 2's order, or an mp4)."""
    from PIL import Image

    from sam2tune.video.sources import jpeg_frames

    if os.path.isdir(video_path):
        paths = jpeg_frames(video_path)[start:stop]
        out = []
        for p in paths:
            with Image.open(p) as im:
                out.append(im.convert("RGB"))
        return out
    import decord

    vr = decord.VideoReader(video_path)
    idx = list(range(len(vr)))[start:stop]
    return [Image.fromarray(a) for a in vr.get_batch(idx).asnumpy()]


# ---------------------------------------------------------------------------------------------
# census: the session's tensors by role, following transformers' own placement

#: kept on the inference device whatever ``inference_state_device`` says: ``store_output`` keeps
#: pointers and scores there, and the batched memory encoder assigns maskmem directly
_STAY = ("object_pointer", "object_score_logits", "maskmem_features", "maskmem_pos_enc")


def hf_census(sess: Any, device: torch.device, knobs: KnobsConfig) -> Census:
    """Count an inference session's bytes by role (frames, cached vision features, state) and
    what lives on the compute device: read from the tensors on CUDA, from transformers'
    placement rules on the CPU (where every device is the host)."""
    c = Census()
    cpu = device.type == "cpu"
    seen: set[int] = set()
    frames: list[tuple[str, torch.Tensor]] = []
    walk_tensors(list((sess.processed_frames or {}).values()), "frames", seen, frames)
    for _, t in frames:
        n = t.untyped_storage().nbytes()
        c.frames_bytes += n
        if (not knobs.offload_video_to_cpu) if cpu else t.device.type != "cpu":
            c.frames_device_bytes += n
    cached: list[tuple[str, torch.Tensor]] = []
    walk_tensors(sess.cache._vision_features, "cached", seen, cached)
    for _, t in cached:  # cached on inference_state_device
        n = t.untyped_storage().nbytes()
        c.cached_features_bytes += n
        if (knobs.offload_state_to_cpu) if cpu else t.device.type == "cpu":
            c.cached_features_host_bytes += n
    rest: list[tuple[str, torch.Tensor]] = []
    for name in ("output_dict_per_obj", "point_inputs_per_obj", "mask_inputs_per_obj"):
        walk_tensors(getattr(sess, name), name, seen, rest)
    for key, t in rest:
        n = t.untyped_storage().nbytes()
        c.state_bytes += n
        if key == "maskmem_features":
            c.maskmem_bytes += n
            c.maskmem_entries += t.shape[1] if t.dim() > 1 else 1
        if cpu:
            on_device = not (
                knobs.offload_state_to_cpu and key not in _STAY and not key.endswith("_per_obj")
            )
        else:
            on_device = t.device.type != "cpu"
        if on_device:
            c.state_device_bytes += n
    return c


# ---------------------------------------------------------------------------------------------
# session


class HFSession:
    """One transformers video session, with :class:`sam2tune.adapter.session.Session`'s
    interface (``init``, ``track``, ``census``, ``close``)."""

    def __init__(self, predictor: HFPredictor, video_path: str, knobs: KnobsConfig) -> None:
        self.predictor = predictor
        self.video_path = video_path
        self.knobs = knobs
        self.session: Any = None
        # no streaming loader: transformers keeps every processed frame
        self.frames: StreamingFrames | None = None
        self.init_s = 0.0
        self.frame_wait_s = 0.0
        self.next_is_prompt = True
        self._size: tuple[int, int] = (0, 0)

    def init(self) -> None:
        """Decode the video and ``init_video_session`` with the knobs' devices."""
        t0 = time.perf_counter()
        p = self.predictor
        frames = read_rgb_frames(self.video_path)
        dev = p.device
        self.session = p.processor.init_video_session(
            video=frames,
            inference_device=dev,
            inference_state_device="cpu" if self.knobs.offload_state_to_cpu else dev,
            video_storage_device="cpu" if self.knobs.offload_video_to_cpu else dev,
            processing_device="cpu",
            max_vision_features_cache_size=self.knobs.vision_features_cache,
            dtype=p.dtype,
        )
        self._size = (int(self.session.video_height), int(self.session.video_width))
        del frames
        self.init_s = time.perf_counter() - t0

    @property
    def num_frames(self) -> int:
        """Frames in the session's video."""
        return int(self.session.num_frames)

    def add_prompt(self, p: Prompt) -> None:
        """Give one prompt and run the prompted frame (as SAM 2's ``add_new_*`` does)."""
        proc, sess = self.predictor.processor, self.session
        if p.kind == "mask":
            proc.add_inputs_to_inference_session(
                sess,
                frame_idx=p.frame,
                obj_ids=p.obj_id,
                input_masks=np.asarray(p.mask, dtype=bool),
            )
        else:
            kw: dict[str, Any] = {}
            if p.box is not None:
                kw["input_boxes"] = [[[float(x) for x in p.box]]]
            if p.points is not None:
                kw["input_points"] = [[[[float(a), float(b)] for a, b in p.points]]]
                kw["input_labels"] = [[[int(v) for v in (p.labels or [])]]]
            proc.add_inputs_to_inference_session(sess, frame_idx=p.frame, obj_ids=p.obj_id, **kw)
        with torch.inference_mode():
            self.predictor.model(inference_session=sess, frame_idx=p.frame)

    def _masks(self, logits: torch.Tensor) -> np.ndarray:
        proc = self.predictor.processor
        m = proc.post_process_masks(
            [logits.float()], original_sizes=[list(self._size)], binarize=True
        )[0]
        return m[:, 0].cpu().numpy().astype(bool)

    def _logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Mask logits at the video's resolution, (objects, 1, H, W), as SAM 2 yields them."""
        proc = self.predictor.processor
        return proc.post_process_masks(
            [logits.float()], original_sizes=[list(self._size)], binarize=False
        )[0]

    def track(self, prompts: list[Prompt], keep_logits: bool = False) -> Iterator[Any]:
        """As :meth:`sam2tune.adapter.session.Session.track`: objects join when propagation
        reaches their first prompted frame; each object's later prompts are given then."""
        model = self.predictor.model
        groups = join_groups(prompts, self.num_frames)
        for i, (start, end, group) in enumerate(groups):
            for k, p in enumerate(group):
                self.add_prompt(p)
                self.next_is_prompt = k + 1 < len(group)
                yield PromptStep(p)
            for out in model.propagate_in_video_iterator(
                self.session, start_frame_idx=start, max_frame_num_to_track=end - start
            ):
                masks = self._masks(out.pred_masks)
                kept = self._logits(out.pred_masks) if keep_logits else None
                self.next_is_prompt = out.frame_idx == end and i + 1 < len(groups)
                yield FrameStep(int(out.frame_idx), [int(o) for o in out.object_ids], masks, kept)

    def census(self) -> Census:
        """The session counted by role now."""
        return hf_census(self.session, self.predictor.device, self.knobs)

    def close(self) -> None:
        """Drop the inference session."""
        self.session = None

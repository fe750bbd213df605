"""Typed configuration of one sam2tune run.

Hydra composes ``conf/`` onto these dataclasses (registered in :mod:`sam2tune.config.store`);
``OmegaConf.to_object`` at the entry point turns the result into plain dataclasses and runs the
``__post_init__`` validation, so no ``DictConfig`` reaches library code. Each knob's help says
what it does and what it costs, with a number where one is known.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

from sam2tune.units import parse_bytes

__all__ = [
    "ModelConfig",
    "VideoConfig",
    "ScenarioConfig",
    "KnobsConfig",
    "LimitsConfig",
    "ProbeConfig",
    "RunConfig",
    "ImplConfig",
    "IMPLS",
    "impl_refusal",
    "config_hash",
]

VIDEO_KINDS = ("synthetic", "jpeg_dir", "mp4")
PROMPTS = ("box", "points", "mask")
DTYPES = ("float32", "bfloat16")
PREDICTORS = ("per_object", "legacy_batched")
STRATEGIES = ("stock", "release", "stream")
DEVICES = ("auto", "cpu", "cuda")
IMPLS = ("sam2", "transformers")


def cuda_refusal(device: str) -> str | None:
    """Why ``device`` (``cuda`` / ``cuda:i``) cannot run on this machine, or None (also for
    any other device): the one check of ``run``, ``propagate`` and ``build_predictor``."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return 'this machine has no CUDA device (torch.cuda.is_available() is False); use "cpu"'
    index = str(device).partition(":")[2]
    if index and int(index) >= torch.cuda.device_count():
        return f"no such CUDA device ({torch.cuda.device_count()} here)"
    return None


#: strategy=stream: the most frames decoded ahead (each is held like a window frame)
MAX_PREFETCH = 64
#: a synthetic video's most frames (10 minutes at 30 fps): it is rendered before the run
MAX_SYNTHETIC_FRAMES = 18000
#: the most objects a synthetic video draws
MAX_SYNTHETIC_OBJECTS = 256


def _fail(name: str, message: str) -> NoReturn:
    raise ValueError(f"{name}: {message}")


def check_finite(obj: Any, prefix: str = "") -> None:
    """Every float field of a dataclass (nested ones too) is a finite number: NaN and inf are
    refused, naming the field (they would be written as NaN / Infinity, which is not JSON)."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            check_finite(v, f"{prefix}{f.name}.")
        elif isinstance(v, float) and not math.isfinite(v):
            _fail(f"{prefix}{f.name}", f"must be a finite number, got {v}")


@dataclass
class ModelConfig:
    """Which SAM 2 to run. Pick a preset with ``model=sam2.1_tiny`` (see ``conf/model/``)."""

    name: str = "sam2.1_tiny"
    # packaged Hydra config inside the sam2 package
    config_file: str = "configs/sam2.1/sam2.1_hiera_t.yaml"
    # Meta's official checkpoint file name, looked up in the download cache
    checkpoint_name: str = "sam2.1_hiera_tiny.pt"
    checkpoint_url: str = (
        "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt"
    )
    # checkpoint file; None = the cache filled by `sam2tune download`; none found = random-init
    # weights (real architecture, memory and speed faithful, masks meaningless)
    checkpoint: str | None = None
    # model input resolution: every frame is resized to image_size x image_size (multiple of 16).
    # Memory scales with its square: frame cache 12 MiB/frame at 1024, 3 MiB at 512, 0.75 MiB at
    # 256; per-object state ~0.77 MiB per object-frame at 1024. SAM 2's own value is 1024.
    image_size: int = 1024
    # seed of the random-init weights (same seed = same weights, so runs stay comparable)
    weights_seed: int = 0
    # parameters + buffers in fp32 (exact, from instantiating the packaged config); used by the
    # memory model; 0 = unknown
    weights_bytes: int = 0

    def __post_init__(self) -> None:
        if self.image_size <= 0 or self.image_size % 16:
            _fail("model.image_size", f"must be a positive multiple of 16, got {self.image_size}")


@dataclass
class VideoConfig:
    """The video. ``video=synthetic`` (default), ``video=jpeg_dir video.path=DIR`` or
    ``video=mp4 video.path=FILE``."""

    kind: str = "synthetic"
    # jpeg_dir: folder of <index>.jpg frames; mp4: the video file
    path: str | None = None
    # jpeg_dir: optional folder of DAVIS-style palette PNG masks (<index>.png, ids = palette index)
    annotations: str | None = None
    # number of frames (synthetic: generated, at most 18000; jpeg_dir/mp4: the first N, None =
    # all; more than the video has is refused)
    num_frames: int | None = 8
    # synthetic: number of objects (the last one enters after the first frame when there are 2+)
    num_objects: int = 2
    # synthetic: the video's own resolution (masks and IoU are at this resolution)
    height: int = 270
    width: int = 480
    # synthetic: generator seed (same seed = same frames and ground truth)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in VIDEO_KINDS:
            _fail("video.kind", f"unknown video kind {self.kind!r} (choose from {VIDEO_KINDS})")
        if self.num_frames is not None and self.num_frames <= 0:
            _fail("video.num_frames", f"must be positive, got {self.num_frames}")
        if self.kind == "synthetic":
            if self.num_frames is None:
                _fail("video.num_frames", "a synthetic video needs a frame count")
            if self.num_frames > MAX_SYNTHETIC_FRAMES:
                _fail(
                    "video.num_frames",
                    f"a synthetic video has at most {MAX_SYNTHETIC_FRAMES} frames (10 minutes at "
                    f"30 fps; it is rendered before the run), got {self.num_frames}",
                )
            if not 0 < self.num_objects <= MAX_SYNTHETIC_OBJECTS:
                _fail(
                    "video.num_objects",
                    f"must be 1..{MAX_SYNTHETIC_OBJECTS}, got {self.num_objects}",
                )
            if self.height < 32 or self.width < 32:
                _fail("video.height/width", f"must be >= 32, got {self.height}x{self.width}")
        elif not self.path:
            _fail("video.path", f"video={self.kind} needs video.path")


@dataclass
class ScenarioConfig:
    """How objects are prompted (prompts derived from ground truth)."""

    # box | points | mask, given on the frame where each object first appears
    prompt: str = "box"
    # re-prompt each visible object every K frames after its first prompt (0 = only first
    # appearance). Every prompted frame becomes a conditioning frame, which memory attention reads
    # on every later frame unless knobs.max_cond_frames_in_attn caps it: the case that grows
    # memory.
    reannotate_every: int = 0
    # an object "appears" on the first frame where at least this many of its pixels are visible
    min_prompt_area: int = 64

    def __post_init__(self) -> None:
        if self.prompt not in PROMPTS:
            _fail("scenario.prompt", f"unknown prompt {self.prompt!r} (choose from {PROMPTS})")
        if self.reannotate_every < 0:
            _fail("scenario.reannotate_every", f"must be >= 0, got {self.reannotate_every}")
        if self.min_prompt_area <= 0:
            _fail("scenario.min_prompt_area", f"must be positive, got {self.min_prompt_area}")


@dataclass
class KnobsConfig:
    """SAM 2's memory / speed knobs."""

    # keep the decoded frame cache (N x 3 x S x S fp32: 12 MiB per frame at S=1024) in host RAM
    # instead of accelerator memory; frames are copied to the device one at a time. Lossless.
    # Costs host RAM instead: a 2-minute 30 fps video is ~42 GiB at 1024.
    offload_video_to_cpu: bool = False
    # keep per-object per-frame outputs (~0.77 MiB per object-frame at 1024) in host RAM. Lossless.
    # Costs fps: SAM 2 reports 27 -> 24 fps for one object at 768 (about 11 %).
    offload_state_to_cpu: bool = False
    # load JPEG frames in a background thread so tracking starts earlier. Every frame is still kept
    # in memory: it saves start-up time, not memory.
    async_loading_frames: bool = False
    # attend to at most this many conditioning (prompted) frames (-1 = all; else >= 2). Lossy when
    # there are more prompted frames than this; each attended frame costs (S/16)^2 memory tokens
    # of attention per object per step. Unselected conditioning frames stay stored.
    max_cond_frames_in_attn: int = -1
    # float32 | bfloat16 (torch.autocast, as in SAM 2's examples). bf16 roughly halves activation
    # memory on GPU; lossy.
    dtype: str = "float32"
    # per_object: SAM2VideoPredictor, each object runs separately (batch 1) sharing backbone
    # features; legacy_batched: all objects in one batch (faster for many objects, more memory)
    predictor: str = "per_object"
    # torch.compile the whole model (SAM2VideoPredictorVOS; GPU, torch >= 2.5.1). Long first-run
    # compile; faster steady state.
    vos_optimized: bool = False
    # sam2tune's bounded-memory modes (forward propagation only; masks bit-identical to stock):
    # stock   = SAM 2 as it is (interactive: everything kept, corrections possible anywhere);
    # release = batch mode: drop per-object outputs no later frame reads (older than the last
    #           (num_maskmem-1) x stride memory frames and max_obj_ptrs_in_encoder-1 pointer
    #           frames) and low-res masks once yielded; conditioning frames are kept. Flat state
    #           instead of ~0.77 MiB per object-frame at 1024. Re-prompting a released frame fails.
    # stream  = release + frames decoded on demand (a window of a few frames, never the whole
    #           video, saving 12 MiB per frame at 1024 on the device or, offloaded, the host) +
    #           masks written to disk as produced (runs/<id>/masks/) instead of kept in memory.
    strategy: str = "stock"
    # process the video in segments of N frames (0 = one piece), seeding each with the previous
    # segment's last masks (mask prompts): memory bounded by N; lossy - the report's iou_ref_mean
    # shows what splitting costs
    segment_frames: int = 0
    # strategy=stream: decode this many frames ahead in as many background threads (bounded
    # queue; each queued frame is held like a window frame: 12 MiB at 1024). 0 = decode in the
    # propagation loop; at most 64. Speed only: masks are bit-identical either way.
    stream_prefetch: int = 4
    # vision features of this many recent frames kept for reuse. transformers:
    # max_vision_features_cache_size (each cached frame holds the backbone's features: 1.9 MiB at
    # 256 px, 30 MiB at 1024 for tiny); sam2 keeps exactly one frame's (its cached_features), so
    # impl=sam2 accepts only 1.
    vision_features_cache: int = 1
    # per_object predictor: track objects in batches of up to K (1 = SAM 2.1's loop, one object at
    # a time; 0 = every object of a group at once) through SAM 2's own model calls; only objects
    # whose memory reads are identical (same conditioning frames, same recent frames) share a
    # batch (sam2tune/adapter/batched.py). Logits within float32 rounding of the batched kernels
    # (a mask pixel differs only where its logit is that close to 0); activations of memory
    # attention + decoder grow with the batch.
    object_batch: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.object_batch <= MAX_SYNTHETIC_OBJECTS:
            _fail(
                "knobs.object_batch",
                f"must be 0 (all) or 1..{MAX_SYNTHETIC_OBJECTS}, got {self.object_batch}",
            )
        if self.object_batch != 1 and self.predictor != "per_object":
            _fail(
                "knobs.object_batch",
                "the legacy batched predictor runs every object in one batch already; "
                "object_batch needs knobs.predictor=per_object",
            )
        if self.strategy not in STRATEGIES:
            _fail(
                "knobs.strategy", f"unknown strategy {self.strategy!r} (choose from {STRATEGIES})"
            )
        if self.segment_frames < 0 or self.segment_frames == 1:
            _fail("knobs.segment_frames", f"must be 0 (off) or >= 2, got {self.segment_frames}")
        m = self.max_cond_frames_in_attn
        if m != -1 and m < 2:
            _fail("knobs.max_cond_frames_in_attn", f"must be -1 (all) or >= 2, got {m}")
        if self.dtype not in DTYPES:
            _fail("knobs.dtype", f"unknown dtype {self.dtype!r} (choose from {DTYPES})")
        if self.predictor not in PREDICTORS:
            _fail("knobs.predictor", f"unknown predictor {self.predictor!r} (choose {PREDICTORS})")
        if not 0 <= self.stream_prefetch <= MAX_PREFETCH:
            _fail(
                "knobs.stream_prefetch",
                f"must be 0..{MAX_PREFETCH} (0 = off; each frame ahead is held in memory), got "
                f"{self.stream_prefetch}",
            )
        if self.vision_features_cache < 1:
            _fail("knobs.vision_features_cache", f"must be >= 1, got {self.vision_features_cache}")

    def memory_saving(self) -> bool:
        """Whether any knob differs from the reference (every memory-saving knob off; the
        prefetch depth changes speed only)."""
        return replace(self, stream_prefetch=KnobsConfig.stream_prefetch) != KnobsConfig()


@dataclass
class ImplConfig:
    """Which implementation runs the model: ``impl=sam2`` (Meta's sam2 package, the default) or
    ``impl=transformers`` (Hugging Face's ``Sam2VideoModel``, with Meta's weights converted by
    name). Same video, prompts, probes, census, estimate, limits and record either way."""

    name: str = "sam2"

    def __post_init__(self) -> None:
        if self.name not in IMPLS:
            _fail("impl", f"unknown implementation {self.name!r} (choose from {IMPLS})")


#: knob -> (value the implementation needs, why), for the knobs transformers' SAM 2 lacks
_HF_LACKS: dict[str, tuple[Any, str]] = {
    "predictor": ("per_object", "transformers has one video predictor (objects run one by one)"),
    "vos_optimized": (False, "SAM2VideoPredictorVOS is Meta's class; transformers has none"),
    "async_loading_frames": (
        False,
        "transformers' processor decodes the video in init_video_session",
    ),
    "strategy": ("stock", "sam2tune's bounded-memory strategies work on Meta's inference state"),
    "segment_frames": (0, "segments run on Meta's inference state"),
    "object_batch": (1, "object batches are arranged in Meta's inference state"),
}


def impl_refusal(impl: str, knobs: KnobsConfig, model: ModelConfig) -> str | None:
    """Why ``impl`` cannot run these knobs / this model (one line, naming the input), or None.
    A knob an implementation lacks is refused, never ignored."""
    if impl == "sam2":
        if knobs.vision_features_cache != 1:
            return (
                f"knobs.vision_features_cache={knobs.vision_features_cache}: impl=sam2 keeps one "
                "frame's vision features (cached_features); this knob is transformers' "
                "max_vision_features_cache_size (impl=transformers)"
            )
        return None
    for knob, (need, why) in _HF_LACKS.items():
        value = getattr(knobs, knob)
        if value != need:
            shown = str(value).lower() if isinstance(value, bool) else value
            return f"knobs.{knob}={shown}: not available with impl=transformers ({why})"
    if not model.config_file.startswith("configs/sam2.1/"):
        return (
            f"model={model.name}: impl=transformers builds SAM 2.1 models only "
            "(Sam2VideoModel has SAM 2.1's occlusion embedding and pointer encodings)"
        )
    return None


@dataclass
class LimitsConfig:
    """Run limits. Budgets are sizes such as ``2GiB`` or ``24GB``; None = no limit."""

    # wall-clock limit of the isolated run process; past it the run is recorded as timeout
    timeout_s: float = 1800.0
    # real limit on the run process's heap (RLIMIT_DATA); over it the run is recorded as oom
    host_memory_budget: str | None = None
    # on CUDA, emulate a smaller GPU with torch.cuda.set_per_process_memory_fraction
    device_memory_budget: str | None = None

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            _fail("limits.timeout_s", f"must be positive, got {self.timeout_s}")
        parse_bytes(self.host_memory_budget, name="limits.host_memory_budget")
        parse_bytes(self.device_memory_budget, name="limits.device_memory_budget")

    @property
    def host_budget_bytes(self) -> int | None:
        """``host_memory_budget`` in bytes (None = no limit)."""
        return parse_bytes(self.host_memory_budget, name="limits.host_memory_budget")

    @property
    def device_budget_bytes(self) -> int | None:
        """``device_memory_budget`` in bytes (None = no limit)."""
        return parse_bytes(self.device_memory_budget, name="limits.device_memory_budget")


@dataclass
class ProbeConfig:
    """What the run measures beyond the light per-frame probes."""

    # the last N propagated frames (steady state: full memory bank, every conditioning frame) run
    # under a tensor-tracking dispatch mode to measure the step's activation peak; it costs ~40 %
    # of those frames' time, so they are left out of fps
    track_frames: int = 2
    # compare masks with the reference run (same video/prompts/model, every memory knob off)
    reference: bool = True
    # the reference's image_size (None = the run's own); a resolution study compares against a
    # higher resolution, masks compared at the video's own resolution
    reference_image_size: int | None = None
    # CUDA only: record PyTorch's allocator history and write runs/<id>/memory_snapshot.pickle
    # (open it at https://pytorch.org/memory_viz)
    memory_snapshot: bool = False

    def __post_init__(self) -> None:
        if self.track_frames < 1:
            _fail("probe.track_frames", f"must be >= 1, got {self.track_frames}")
        r = self.reference_image_size
        if r is not None and (r <= 0 or r % 16):
            _fail("probe.reference_image_size", f"must be a positive multiple of 16, got {r}")


@dataclass
class RunConfig:
    """One experiment: model x video x scenario x knobs, run in an isolated process."""

    model: ModelConfig = field(default_factory=ModelConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    knobs: KnobsConfig = field(default_factory=KnobsConfig)
    impl: ImplConfig = field(default_factory=ImplConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    # auto (cuda when available, else cpu) | cpu | cuda
    device: str = "auto"
    # where run records go: <results_dir>/runs/<run_id>/{report.json,config.json}
    results_dir: str = "results"
    # cache for checkpoints and generated videos (None = $XDG_CACHE_HOME/sam2tune or ~/.cache/...)
    cache_dir: str | None = None
    # run a point even when a row with the same config_hash and status ok is already recorded
    force: bool = False

    def __post_init__(self) -> None:
        check_finite(self)
        if self.device not in DEVICES:
            _fail("device", f"unknown device {self.device!r} (choose from {DEVICES})")
        if not str(self.results_dir or "").strip():  # `results_dir=$DIR` with DIR unset
            _fail("results_dir", "empty path (the runs would land in the current folder)")
        why = impl_refusal(self.impl.name, self.knobs, self.model)
        if why is not None:
            raise ValueError(why)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-ready) of the whole config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """The config of :meth:`to_dict`'s output (validated again)."""
        return cls(
            model=ModelConfig(**d.get("model", {})),
            video=VideoConfig(**d.get("video", {})),
            scenario=ScenarioConfig(**d.get("scenario", {})),
            knobs=KnobsConfig(**d.get("knobs", {})),
            impl=ImplConfig(**d.get("impl", {})),
            limits=LimitsConfig(**d.get("limits", {})),
            probe=ProbeConfig(**d.get("probe", {})),
            **{k: v for k, v in d.items() if k not in _GROUPS},
        )


_GROUPS = ("model", "video", "scenario", "knobs", "impl", "limits", "probe")


def config_hash(cfg: RunConfig) -> str:
    """Hash of what defines an experiment's outcome (not where it is written or how long it may
    run), so a sweep can recognise a point it already ran."""
    d = cfg.to_dict()
    for k in ("results_dir", "cache_dir", "force"):
        d.pop(k)
    d["limits"].pop("timeout_s")
    if not d["probe"]["memory_snapshot"]:  # off: the hash of configs from before the option
        d["probe"].pop("memory_snapshot")
    if d["knobs"]["strategy"] != "stream":  # no effect there: the hash from before the knob
        d["knobs"].pop("stream_prefetch")
    if d["knobs"]["vision_features_cache"] == 1:  # the default: the hash from before the knob
        d["knobs"].pop("vision_features_cache")
    if d["knobs"]["object_batch"] == 1:  # the default: the hash from before the knob
        d["knobs"].pop("object_batch")
    if d["impl"]["name"] == "sam2":  # the default: the hash from before impl existed
        d.pop("impl")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

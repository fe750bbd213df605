"""Peak accelerator and host memory of a SAM 2 video run, term by term.

Exact where SAM 2's code fixes a size (S = image_size, T = (S/16)^2 tokens a frame, N = frames,
K = objects):

* frame cache: ``3 x S^2 x 4`` B per loaded frame (all N for stock/release, the window for
  stream, the segment for segments); on the host with ``offload_video_to_cpu``. SAM 2's loader
  builds the whole cache on the host first and then moves it to the device, so without
  ``offload_video_to_cpu`` the host holds it too while loading (the *loading transient*);
* per object-frame state: ``maskmem_features`` ``64 x T x 2`` B (bf16) + ``pred_masks``
  ``(S/4)^2 x 4`` B + object pointer and score ``256 x 4 + 4`` B, for every tracked object-frame
  (stock) or only for the frames forward propagation still reads plus the conditioning frames
  (release / stream); maskmem and masks on the host with ``offload_state_to_cpu``;
* weights: parameters + buffers (the model preset's ``weights_bytes``);
* **memory tokens** one step's memory attention reads, from SAM 2's own selection
  (``_prepare_memory_conditioned_features``): the conditioning frames
  ``select_closest_cond_frames`` keeps under ``max_cond_frames_in_attn`` + the
  ``num_maskmem - 1`` previous frames that are not selected conditioning frames, T tokens
  each, + 4 tokens per object pointer (selected past conditioning frames + the 15 previous
  frames). Per object (per-object predictor) or for the
  batch (legacy batched predictor), maximised over the video's non-conditioning frames.

Fitted from recorded runs where the code does not fix a size (per device kind, relative least
squares, with the runs they came from):

* cached features ``c_feat x S^2``;
* one step's activation peak = the larger of two phases:
  image encoder ``a_enc x E x S^2`` (E = the Hiera trunk's embed_dim: 96 tiny/small, 112 base+,
  144 large) and memory attention ``a_q x S^2 + tokens x 5,120 B + a_out x (K-1) x S^2`` (per
  object) ``+ (B-1) x (a_bq x S^2 + a_btok x tokens)`` (legacy batch of B). The per-token bytes
  are *not* fitted: they are the K/V projections, rotary copies and concatenated memory SAM 2's
  code allocates per memory token (:attr:`sam2tune.adapter.arch.Arch.token_bytes`); x
  ``bf16_enc`` / ``bf16_mem`` under bfloat16 autocast;
* host: the run process's baseline is *measured on the machine that predicts*
  (:mod:`sam2tune.memory_model.baseline`), plus exact host-resident terms and
  ``h_act x activations + h_px x S^2`` (CPU: the allocator's and oneDNN's share beyond the
  tracked tensors).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam2tune.metrics import MaskDir  # its write queue is part of stream's host memory
from sam2tune.resources import data_dir

if TYPE_CHECKING:
    from sam2tune.adapter.arch import Arch
    from sam2tune.config.schema import KnobsConfig

__all__ = [
    "Workload",
    "Candidate",
    "MemoryModel",
    "predict",
    "memory_read",
    "max_frames_within_budget",
    "trust_region",
    "DEFAULT_MODEL_PATH",
]

STREAM_WINDOW = 2
REQUIRED_COEFFS = ("a_enc", "a_q", "a_out", "c_feat")
DEFAULT_MODEL_PATH = data_dir("conf") / "memory_model.json"


@dataclass
class Workload:
    """What the user has: model, resolution, video length, objects, prompted frames."""

    model: str = "sam2.1_tiny"
    image_size: int = 1024
    num_frames: int = 300
    num_objects: int = 1
    # prompted (conditioning) frames of each object; with prompt_every > 0 derived from it
    num_cond_frames: int = 1
    # object-frames actually tracked (objects entering late track fewer); None = K x N
    object_frames: int | None = None
    weights_bytes: int = 0
    # each object re-prompted every this many frames (0 = num_cond_frames spread evenly)
    prompt_every: int = 0
    # the source video's own resolution (output masks, JPEG decoding)
    video_height: int = 1080
    video_width: int = 1920
    # exact prompted frames per object, when known (a recorded run, the synthetic scenario)
    cond_frames: list[list[int]] | None = None
    # the frame each object is first prompted on (None = every object on frame 0); with
    # prompt_every each is re-prompted every prompt_every frames from there
    first_frames: list[int] | None = None

    def __post_init__(self) -> None:
        for name in ("image_size", "num_frames", "num_objects", "num_cond_frames",
                     "video_height", "video_width"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"workload.{name}: must be a positive integer, got {v!r}")
        if self.image_size % 16:
            raise ValueError(
                f"workload.image_size: must be a multiple of 16, got {self.image_size}"
            )
        if self.prompt_every < 0:
            raise ValueError(f"workload.prompt_every: must be >= 0, got {self.prompt_every}")
        if self.prompt_every:
            self.num_cond_frames = len(range(0, self.num_frames, self.prompt_every))
        if self.first_frames is not None and self.cond_frames is None:
            ff = [int(f) for f in self.first_frames]
            if len(ff) != self.num_objects:
                raise ValueError(
                    f"workload.first_frames: one frame per object ({self.num_objects}), got "
                    f"{len(ff)}"
                )
            for i, f in enumerate(ff):
                if not 0 <= f < self.num_frames:
                    raise ValueError(
                        f"workload.first_frames[{i}]: must be in 0..{self.num_frames - 1}, got {f}"
                    )
            step = self.prompt_every or self.num_frames
            self.cond_frames = [list(range(f, self.num_frames, step)) for f in ff]
            self.num_cond_frames = len({f for fs in self.cond_frames for f in fs})
            self.object_frames = sum(self.num_frames - f for f in ff)

    def with_frames(self, n: int) -> Workload:
        """The same workload on a video of ``n`` frames (prompts every ``prompt_every`` kept)."""
        if self.cond_frames is not None:
            conds = [[f for f in fs if f < n] or [0] for fs in self.cond_frames]
            starts = [min(fs) for fs in conds]
            return dataclasses.replace(
                self,
                num_frames=n,
                cond_frames=conds,
                num_cond_frames=len({f for fs in conds for f in fs}),
                object_frames=sum(n - s for s in starts),
            )
        return dataclasses.replace(
            self,
            num_frames=n,
            num_cond_frames=min(self.num_cond_frames, n),
            object_frames=None if self.object_frames is None else self.num_objects * n,
        )

    def cond_per_object(self) -> int:
        """The most prompted (conditioning) frames any one object has."""
        return max(len(fs) for fs in self.prompted())

    def prompted(self) -> list[list[int]]:
        """Prompted frames of each object."""
        if self.cond_frames is not None:
            return [sorted(set(fs)) for fs in self.cond_frames]
        n = self.num_frames
        if self.prompt_every:
            fs = list(range(0, n, self.prompt_every))
        else:
            c = min(self.num_cond_frames, n)
            fs = sorted({int(i * n / c) for i in range(c)})
        return [fs] * self.num_objects


@dataclass(frozen=True, kw_only=True)  # by name only: a new knob cannot shift the others
class Candidate:
    """The knobs a recommendation chooses: a subset of :class:`~sam2tune.config.schema.KnobsConfig`
    (same names, same defaults; checked by a test) plus the input resolution. Converted with
    :meth:`from_knobs` / :meth:`knobs`, never field by field."""

    offload_video_to_cpu: bool = False
    offload_state_to_cpu: bool = False
    max_cond_frames_in_attn: int = -1
    dtype: str = "float32"
    predictor: str = "per_object"
    strategy: str = "stock"
    segment_frames: int = 0
    stream_prefetch: int = 4
    vision_features_cache: int = 1
    image_size: int | None = None  # None = the workload's
    impl: str = "sam2"  # the implementation (``impl=``), not a knob

    @classmethod
    def from_knobs(cls, src: Any, image_size: int | None = None) -> Candidate:
        """The candidate of a ``KnobsConfig``, a results row or Optuna params (a mapping or an
        object with the knob attributes; missing or null knobs take their defaults)."""
        get = src.get if isinstance(src, dict) else (lambda k, d=None: getattr(src, k, d))
        vals: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in _NOT_KNOBS:
                continue
            v = get(f.name, None)
            typ: Any = type(f.default)  # bool / int / str, as KnobsConfig declares them
            vals[f.name] = f.default if v is None or v != v else typ(v)  # NaN: null
        impl = get("impl", None)
        return cls(**vals, image_size=image_size, impl=impl if isinstance(impl, str) else "sam2")

    def knobs(self) -> KnobsConfig:
        """The run's ``knobs`` config for this candidate."""
        from sam2tune.config.schema import KnobsConfig

        names = [f.name for f in dataclasses.fields(self) if f.name not in _NOT_KNOBS]
        return KnobsConfig(**{n: getattr(self, n) for n in names})

    def overrides(self, w: Workload) -> list[str]:
        """The equivalent ``sam2tune run`` overrides."""
        out = [f"model={w.model}", f"model.image_size={self.image_size or w.image_size}"]
        if self.impl != "sam2":
            out.append(f"impl={self.impl}")
        for f in dataclasses.fields(self):
            if f.name in _NOT_KNOBS:
                continue
            v = getattr(self, f.name)
            if v != f.default:
                out.append(f"knobs.{f.name}={str(v).lower() if isinstance(v, bool) else v}")
        return out


#: Candidate fields that are not ``knobs.*``
_NOT_KNOBS = ("image_size", "impl")


@dataclass
class MemoryModel:
    """Fitted coefficients per device kind (``cpu`` / ``cuda``) with their provenance."""

    coeffs: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)

    def kind(self, device_kind: str) -> tuple[dict[str, float], str]:
        """Coefficients for ``device_kind`` and where they came from (falls back to cpu)."""
        if device_kind in self.coeffs:
            return self.coeffs[device_kind], device_kind
        if "cpu" in self.coeffs:
            return self.coeffs["cpu"], "cpu (no runs on this device kind yet)"
        raise ValueError("memory model: no fitted coefficients (run `sam2tune fit`)")

    def save(self, path: str | Path) -> None:
        """Write coefficients and provenance as JSON (atomically)."""
        from sam2tune.paths import atomic_write_json

        atomic_write_json(Path(path), {"coeffs": self.coeffs, "calibration": self.calibration})

    @classmethod
    def load(cls, path: str | Path | None = None) -> MemoryModel:
        """Read a model file (default: the shipped ``conf/memory_model.json``), validated."""
        p = Path(path) if path else DEFAULT_MODEL_PATH
        try:
            d = json.loads(p.read_text())
            coeffs = d["coeffs"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"model_file: {str(p)!r} is not a memory model ({e})") from None
        for kind, k in coeffs.items():
            missing = [n for n in REQUIRED_COEFFS if n not in k]
            if missing:
                raise ValueError(
                    f"model_file: {str(p)!r} was fitted by an older sam2tune ({kind} lacks "
                    f"{', '.join(missing)}); refit it with `sam2tune fit`"
                )
        return cls(coeffs, d.get("calibration", {}))


@cache
def _arch(model: str):
    from sam2tune.adapter.arch import arch_of
    from sam2tune.config.presets import model_preset

    return arch_of(model_preset(model).config_file)


def _sizes(S: int, mem_dim: int = 64, es: int = 4) -> dict[str, int]:
    """Exact tensor sizes at input size ``S``; ``es`` = bytes per element of what an
    implementation stores in the session's dtype (transformers in bfloat16: 2)."""
    t = (S // 16) ** 2
    return {
        "frame": 3 * S * S * es,
        "maskmem": mem_dim * t * 2,
        "masks": (S // 4) ** 2 * es,
        "ptr": 256 * es + es,
        "pos_enc": mem_dim * t * es,
        "tokens": t,
        # transformers only: each object-frame's output keeps its high-resolution mask logits
        "high_res": S * S * es,
        # transformers only: one frame's cached vision features (the three FPN levels after
        # conv_s0 / conv_s1: 32, 64, 256 channels) and their positional encodings (256 each)
        "hf_features": (
            (S // 4) ** 2 * 32 + (S // 8) ** 2 * 64 + t * 256
            + 256 * ((S // 4) ** 2 + (S // 8) ** 2 + t)
        ) * es,
    }


def _es(c: Candidate) -> int:
    """Bytes per element an implementation stores its frames and outputs in."""
    return 2 if c.impl == "transformers" and c.dtype == "bfloat16" else 4


def _select(t: int, conds: list[int], cap: int) -> list[int]:
    """SAM 2's ``select_closest_cond_frames``: the conditioning frames frame ``t`` attends."""
    if cap == -1 or len(conds) <= cap:
        return conds
    i = bisect.bisect_left(conds, t)  # conds[i] is the first >= t
    sel = []
    lo, hi = i - 1, i
    if lo >= 0:
        sel.append(conds[lo])
        lo -= 1
    if hi < len(conds):
        sel.append(conds[hi])
        hi += 1
    while len(sel) < cap:  # then the temporally closest others (ties: the earlier first)
        if lo < 0 and hi >= len(conds):
            break
        if hi >= len(conds) or (lo >= 0 and abs(conds[lo] - t) <= abs(conds[hi] - t)):
            sel.append(conds[lo])
            lo -= 1
        else:
            sel.append(conds[hi])
            hi += 1
    return sorted(sel)


def _read_at(
    t: int, start: int, conds: list[int], cap: int, arch, cset: set[int] | None = None
) -> tuple[int, int]:
    """(memory frames, object pointers) non-conditioning frame ``t`` reads (forward)."""
    if cap == -1 or len(conds) <= cap:  # every conditioning frame is selected
        sset = cset if cset is not None else set(conds)
        n_sel, past_sel = len(conds), bisect.bisect_right(conds, t)
    else:
        sel = _select(t, conds, cap)
        sset = set(sel)
        n_sel, past_sel = len(sel), sum(1 for c in sel if c <= t)
    frames = n_sel
    s = arch.temporal_stride
    for t_pos in range(1, arch.num_maskmem):
        t_rel = arch.num_maskmem - t_pos
        prev = t - 1 if t_rel == 1 else ((t - 2) // s) * s - (t_rel - 2) * s
        if start <= prev < t and prev not in sset:
            frames += 1
    ptrs = past_sel
    for d in range(1, arch.max_obj_ptrs):
        p = t - d
        if p < start:
            break
        if p not in sset:
            ptrs += 1
    return frames, ptrs


@lru_cache(maxsize=4096)
def _max_read(n: int, start: int, conds: tuple[int, ...], cap: int, arch) -> tuple[int, int]:
    cl = list(conds)
    cset = set(cl)
    gap = max((b - a for a, b in zip(cl, cl[1:], strict=False)), default=0)
    window = 2 * max(gap, 1) + 2 * arch.max_obj_ptrs + arch.num_maskmem
    # the pattern repeats with the prompt spacing: the video's ends cover every case
    ts = set(range(start, min(n, start + window))) | set(range(max(start, n - window), n))
    if len(cl) > 1 and gap > window:
        for c in cl:
            ts |= set(range(c, min(n, c + window)))
    best = (0, 0)
    for t in sorted(ts):
        if t in cset or t <= start:
            continue
        best = max(best, _read_at(t, start, cl, cap, arch, cset))
    return best


def memory_read(w: Workload, c: Candidate, S: int | None = None) -> dict[str, int]:
    """The most memory one step's attention reads over the video (forward propagation).

    Returns:
        ``{"frames": memory frames, "pointers": object pointers, "tokens": memory tokens,
        "batch": objects per batch}``; ``frames == 0`` when no frame runs memory attention
        (every tracked frame is a conditioning frame).
    """
    arch = _arch(w.model)
    S = S or c.image_size or w.image_size
    cap = c.max_cond_frames_in_attn
    n = w.num_frames
    seg = c.segment_frames if c.segment_frames and c.segment_frames < n else 0
    prompted = w.prompted()
    if c.predictor == "legacy_batched":
        prompted = [sorted({f for fs in prompted for f in fs})]
    best = (0, 0)
    for fs in prompted:
        if seg:  # each segment is seeded on its first frame: at most one segment's prompts
            span = [f for f in fs if f < seg] or [0]
            best = max(best, _max_read(seg, span[0], tuple(span), cap, arch))
        else:
            best = max(best, _max_read(n, fs[0], tuple(fs), cap, arch))
    frames, ptrs = best
    batch = w.num_objects if c.predictor == "legacy_batched" else 1
    tokens = frames * (S // 16) ** 2 + ptrs * arch.ptr_tokens if frames else 0
    return {"frames": frames, "pointers": ptrs, "tokens": tokens, "batch": batch}


def activation_features(
    w: Workload, c: Candidate, read: dict[str, int] | None = None
) -> dict[str, float]:
    """The structural quantities the activation coefficients multiply (``read``: the
    :func:`memory_read` of ``(w, c)`` when the caller has it)."""
    S = c.image_size or w.image_size
    r = read or memory_read(w, c, S)
    return {
        "enc": float(_arch(w.model).embed_dim * S * S),  # x a_enc
        "q": float(S * S) if r["frames"] else 0.0,  # x a_q
        # bytes the memory tokens take at the attention peak, sized from SAM 2's code (float32)
        "tok_bytes": float(_arch(w.model).token_bytes * r["tokens"]),
        # legacy batched: what each further object of the batch adds (fitted: the rotary
        # frequencies and the backbone features are shared across the batch)
        "bq": float((r["batch"] - 1) * S * S) if r["frames"] else 0.0,  # x a_bq
        "btok": float((r["batch"] - 1) * r["tokens"]),  # x a_btok
        "out": float(max(w.num_objects - 1, 0) * S * S)
        if r["frames"] and c.predictor == "per_object"
        else 0.0,  # x a_out
    }


def activations(
    w: Workload, c: Candidate, k: dict[str, float], read: dict[str, int] | None = None
) -> dict[str, int]:
    """One step's activation peak: the larger of the image-encoder and memory-attention phases."""
    f = activation_features(w, c, read)
    enc = k["a_enc"] * f["enc"]
    mem = (
        k["a_q"] * f["q"]
        + f["tok_bytes"]
        + k["a_out"] * f["out"]
        + k.get("a_bq", 0.0) * f["bq"]
        + k.get("a_btok", 0.0) * f["btok"]
        if f["tok_bytes"]
        else 0.0
    )
    if c.dtype == "bfloat16":  # autocast: the two phases scale differently (rotary in fp32)
        enc *= k.get("bf16_enc", 1.0)
        mem *= k.get("bf16_mem", 1.0)
    if c.impl == "transformers":  # its own attention and layer code: a fitted ratio to sam2's
        enc *= k.get("hf_enc", 1.0)
        mem *= k.get("hf_mem", 1.0)
    return {"image_encoder": int(enc), "memory_attention": int(mem), "peak": int(max(enc, mem))}


def _device_terms(
    w: Workload, c: Candidate, k: dict[str, float], S: int, arch: Arch, res: _Resident,
    read: dict[str, int], act_peak: int, device_kind: str,
) -> tuple[dict[str, int], int]:
    """The accelerator's terms (integer bytes) and the features transformers keeps on the host
    (offload_state_to_cpu), counted with the host's terms."""
    z = _sizes(S, arch.mem_dim, _es(c))
    hf = c.impl == "transformers"
    # offload_state: the memory bank read this step is copied back to the device (bf16 maskmem);
    # transformers keeps the memory bank on the device whatever the state device
    bank = read["frames"] * z["maskmem"] * read["batch"] if c.offload_state_to_cpu else 0
    # transformers keeps vision_features_cache frames' features on its state device (the host
    # with offload_state_to_cpu); sam2's one frame of features: fitted
    feat = min(c.vision_features_cache, w.num_frames) * z["hf_features"] if hf else 0
    feat_host = feat if c.offload_state_to_cpu else 0
    terms = {
        "weights": int(w.weights_bytes),
        "frames": int(res.frames_dev),
        "state": int(res.state_dev),
        "cached_features": feat - feat_host if hf else int(k["c_feat"] * S * S),
        "activations": act_peak,
        "bank_copy": 0 if hf else int(bank),
        # the mask logits SAM 2 returns for a frame (and a prompt call): objects x H x W float32
        # at the video's own resolution, on the device, alive while the next step runs
        "output_masks": int(w.num_objects * w.video_height * w.video_width * 4),
    }
    if device_kind == "cuda":  # allocator-visible library workspaces (measured constant)
        terms["cuda_fixed"] = int(k.get("d_0", 0.0))
    return terms, feat_host


def predict(
    w: Workload,
    c: Candidate,
    model: MemoryModel,
    device_kind: str = "cuda",
    host_baseline: int | None = None,
    host_resident: int | None = None,
) -> dict[str, Any]:
    """Predicted peaks, term by term (integer bytes), for workload ``w`` under knobs ``c``.

    Args:
        host_baseline: the run process's peak RSS before SAM 2 allocates, on the machine that
            predicts (default: measured once and cached, see
            :func:`sam2tune.memory_model.baseline.host_baseline`).
        host_resident: its resident RSS at that point (default: ``host_baseline``). On CUDA the
            peak includes a transient of the context's start that later phases may not exceed:
            host peak = max(baseline peak, resident + the run's host terms).

    Returns:
        ``{"terms": {term: device bytes}, "host_terms": {...}, "device_peak_bytes",
        "host_peak_bytes", "memory_read", "trust", "calibrated_on": ...}``.
    """
    k, source = model.kind(device_kind)
    S = c.image_size or w.image_size
    arch = _arch(w.model)
    res = _resident(w, c, S, arch)
    read = memory_read(w, c, S)
    act = activations(w, c, k, read)
    terms, feat_host = _device_terms(w, c, k, S, arch, res, read, act["peak"], device_kind)
    device_peak = sum(terms.values())
    if host_baseline is None:
        from sam2tune.memory_model.baseline import host_baseline as measure

        base = measure(device_kind)
        host_baseline = int(base["rss_bytes"])
        host_resident = int(base.get("resident_bytes") or host_baseline)
    if feat_host:  # counted with the offloaded state in the host terms
        res = dataclasses.replace(res, state=res.state + feat_host)
    resident = host_baseline if host_resident is None else host_resident
    host_terms = _host_terms(
        w, c, k, S, res, act["peak"], device_peak, device_kind, host_baseline, resident
    )
    cal = model.calibration.get(source.split(" ")[0], {})
    return {
        "terms": terms,
        "host_terms": host_terms,
        "device_peak_bytes": int(device_peak),
        "host_peak_bytes": int(sum(host_terms.values())),
        "activation_phases": act,
        "memory_read": read,
        "calibrated_on": cal.get("summary", {}) | {"coefficients": source},
        "trust": trust_region(w, c, cal, read),
        "image_size": S,
    }


@dataclass(frozen=True)
class _Resident:
    """What one session keeps: the frame cache and the per-object state, in total and the part
    that stays on the device under the offload knobs; ``obj_frames`` = objects x frames held."""

    frames: int
    frames_dev: int
    state: int
    state_dev: int
    obj_frames: int


def _resident(w: Workload, c: Candidate, S: int, arch: Arch) -> _Resident:
    if c.impl == "transformers":
        return _resident_hf(w, c, S, arch)
    z = _sizes(S, arch.mem_dim)
    N, K = w.num_frames, w.num_objects
    seg = c.segment_frames if c.segment_frames and c.segment_frames < N else 0
    span = seg or N  # frames one session holds
    # stream holds its window of served frames plus the queue decoded ahead
    held = STREAM_WINDOW + c.stream_prefetch if c.strategy == "stream" else span
    frames = held * z["frame"]
    obj_frames = w.object_frames if w.object_frames is not None else K * N
    obj_frames = min(obj_frames, K * span)
    per_full = z["maskmem"] + z["masks"] + z["ptr"]
    if c.strategy in ("release", "stream"):  # conditioning frames kept, the rest a window
        n_full = min(obj_frames, K * min(w.cond_per_object(), span))
        n_window = min(obj_frames - n_full, K * min(arch.horizon_back + 1, span))
        host_part = n_full * (z["maskmem"] + z["masks"]) + n_window * z["maskmem"]
        state = n_full * per_full + n_window * (z["maskmem"] + z["ptr"]) + z["pos_enc"]
    else:
        host_part = obj_frames * (z["maskmem"] + z["masks"])
        state = obj_frames * per_full + z["pos_enc"]
    return _placed(c, frames, state, host_part, obj_frames)


def _placed(c: Candidate, frames: int, state: int, host_part: int, obj_frames: int) -> _Resident:
    """What stays on the device under the offload knobs (``host_part``: the state they move)."""
    return _Resident(
        frames=frames,
        frames_dev=0 if c.offload_video_to_cpu else frames,
        state=state,
        state_dev=state - host_part if c.offload_state_to_cpu else state,
        obj_frames=obj_frames,
    )


def _resident_hf(w: Workload, c: Candidate, S: int, arch: Arch) -> _Resident:
    """transformers' session (``Sam2VideoInferenceSession``): every processed frame in the
    session's dtype on ``video_storage_device``; per object-frame the outputs
    ``store_output`` keeps - low-res and high-res mask logits on ``inference_state_device``,
    pointer and score on the inference device - plus the memory bank the batched memory encoder
    assigns directly (on the inference device: maskmem in bf16; its positional encoding shared
    across frames)."""
    z = _sizes(S, arch.mem_dim, _es(c))
    N, K = w.num_frames, w.num_objects
    frames = N * z["frame"]
    obj_frames = w.object_frames if w.object_frames is not None else K * N
    host_part = obj_frames * (z["masks"] + z["high_res"])
    # the memory bank's positional encoding: one storage per batch size the memory encoder ran
    # (a lone object's prompt: 1; propagation: all K), shared by every frame (measured)
    pos = z["pos_enc"] * (K + 1 if K > 1 else 1)
    if obj_frames < K * N:
        # an object joining late: its prompt's forward runs the tracked objects on that frame
        # too, so the frame is encoded twice (another set of encodings and one more maskmem)
        pos += z["pos_enc"] * (K + 1) + z["maskmem"]
    state = obj_frames * (z["maskmem"] + z["masks"] + z["high_res"] + z["ptr"]) + pos
    return _placed(c, frames, state, host_part, obj_frames)


def _host_terms(
    w: Workload,
    c: Candidate,
    k: dict[str, float],
    S: int,
    res: _Resident,
    act_peak: int,
    device_peak: int,
    device_kind: str,
    baseline: int,
    resident: int,
) -> dict[str, int]:
    """The host peak, term by term (see :func:`predict`)."""
    masks_kept = (  # stream: only the masks queued for writing (one byte per pixel)
        MaskDir.QUEUE * w.num_objects * w.video_height * w.video_width
        if c.strategy == "stream"
        else res.obj_frames * math.ceil(w.video_height * w.video_width / 8)
    )
    decode = w.video_height * w.video_width * 3 * 2 + S * S * 3 * 9  # one JPEG: decode + float64
    # stream decodes during propagation, up to stream_prefetch frames at once (one inline if 0)
    stream_decode = decode * max(1, c.stream_prefetch) if c.strategy == "stream" else 0
    t: dict[str, int] = {
        "baseline": int(baseline if device_kind == "cpu" else resident),
        "masks_kept": int(masks_kept),
        # the run process beyond the baseline (fitted): a constant (on CUDA, mostly the host side
        # of cuDNN / cuBLAS, loaded at first use), a share of the activations (CPU) or of the
        # weights' build on the host (CUDA: what the heap keeps of it), and a part per pixel
        "allocator": int(
            k.get("h_0", 0.0)
            + k.get("h_act", 0.0) * act_peak
            + k.get("h_w", 0.0) * w.weights_bytes
            + k.get("h_px", 0.0) * S * S
        ),
    }
    offloaded = (res.frames - res.frames_dev) + (res.state - res.state_dev)
    if device_kind == "cpu":  # everything lives in host RAM
        t["device_side"] = int(device_peak)
        t["offloaded"] = int(offloaded)
        t["decode"] = int(decode) if c.strategy != "stream" else int(stream_decode)
        return t
    # SAM 2's loader builds the whole frame cache on the host, then moves it to the device
    load_phase = stream_decode if c.strategy == "stream" else res.frames + decode
    t["frames"] = int(res.frames - res.frames_dev)
    t["state"] = int(res.state - res.state_dev)
    t["loading_transient"] = int(max(0, load_phase - offloaded))
    # the context's start transient, where later phases stay below it
    t["baseline_transient"] = int(max(0, baseline - sum(t.values())))
    return t


#: axes that scale only terms SAM 2's code fixes (no fitted coefficient grows with them):
#: extrapolating them is not a warning, and the trust note says why
EXACT_AXES = {
    "num_frames": "frames scale exact terms only (frame cache, state per object-frame)",
    "memory_frames": "memory tokens cost exact per-token bytes (SAM 2's attention code)",
}


def workload_axes(w: Workload, c: Candidate, read: dict[str, int] | None = None) -> dict[str, Any]:
    """A (workload, knobs) pair as the trust region's axes."""
    r = read or memory_read(w, c)
    return {
        "image_size": c.image_size or w.image_size,
        "num_frames": w.num_frames,
        "num_objects": w.num_objects,
        "memory_frames": r["frames"],
        "model": w.model,
        "impl": c.impl,
        "predictor": c.predictor,
        "dtype": c.dtype,
        "strategy": c.strategy + ("+segments" if c.segment_frames else ""),
        "offload_video_to_cpu": c.offload_video_to_cpu,
        "offload_state_to_cpu": c.offload_state_to_cpu,
    }


def trust_region(
    w: Workload, c: Candidate, calibration: dict[str, Any], read: dict[str, int] | None = None
) -> dict[str, Any]:
    """Whether the workload lies inside what the model was calibrated on, axis by axis.

    Returns:
        ``{"inside": bool, "axes": {axis: {"value", "calibrated", "status", "factor"?}},
        "statement": one line}``; numeric axes outside say how far ("image_size 1024: 2.0x the
        largest calibrated").
    """
    region = calibration.get("region")
    if not region:
        return {"inside": False, "axes": {}, "statement": "no calibration region recorded"}
    axes: dict[str, Any] = {}
    notes, exact = [], []
    for name, v in workload_axes(w, c, read).items():
        cal = region.get(name)
        if cal is None and name == "impl":  # fitted before impl= existed: Meta's sam2 only
            cal = ["sam2"]
        if cal is None:
            continue
        ax, note = _axis(name, v, cal)
        axes[name] = ax
        if ax.get("via"):
            exact.append(f"model {v} shares {ax['via']}'s architecture (calibrated)")
        if note and name in EXACT_AXES:
            ax["exact"] = True
            exact.append(f"{note} ({EXACT_AXES[name]})")
        elif note:
            notes.append(note)
    inside = not notes
    head = (
        "inside the calibrated region for every fitted term"
        if inside
        else "fitted terms extrapolated: " + "; ".join(notes)
    )
    if exact:
        head += "; not a concern: " + "; ".join(exact)
    return {"inside": inside, "axes": axes, "statement": head, "exact_extrapolations": exact}


def _axis(name: str, v: Any, cal: Any) -> tuple[dict[str, Any], str | None]:
    """One axis against its calibrated range or set: its entry and a note when outside."""
    if isinstance(cal, dict):  # numeric range
        lo, hi = cal["min"], cal["max"]
        if v > hi:
            f = v / hi if hi else math.inf
            ax = {"value": v, "calibrated": [lo, hi], "status": "above", "factor": f}
            return ax, f"{name} {v}: {f:.1f}x the largest calibrated ({hi})"
        if v < lo:
            f = lo / v if v else math.inf
            ax = {"value": v, "calibrated": [lo, hi], "status": "below", "factor": f}
            return ax, f"{name} {v}: below the smallest calibrated ({lo})"
        return {"value": v, "calibrated": [lo, hi], "status": "inside"}, None
    if v in cal:
        return {"value": v, "calibrated": cal, "status": "inside"}, None
    if name == "model":
        twin = _same_architecture(str(v), [str(m) for m in cal])
        if twin is not None:
            ax = {"value": v, "calibrated": cal, "status": "inside", "via": twin}
            return ax, None
    seen = ", ".join(map(str, cal))
    return {"value": v, "calibrated": cal, "status": "unseen"}, (
        f"{name} {v}: never calibrated (seen: {seen})"
    )


def _same_architecture(model: str, calibrated: list[str]) -> str | None:
    """A calibrated model whose sizes the fitted terms read are the same (``sam2_tiny`` and
    ``sam2.1_tiny``: same Hiera trunk width, memory frames, pointers and widths), if any."""
    try:
        mine = _arch(model)
    except Exception:
        return None
    size = model.split("_", 1)[-1]
    same = [m for m in calibrated if _arch(m) == mine]
    same.sort(key=lambda m: m.split("_", 1)[-1] != size)  # the same size name first
    return same[0] if same else None


def max_frames_within_budget(
    w: Workload | Callable[[int], Workload],
    c: Candidate,
    model: MemoryModel,
    device_kind: str,
    budget: int,
    host_budget: int | None = None,
    host_baseline: int | None = None,
    limit: int = 10_000_000,
) -> int | None:
    """The largest ``num_frames`` whose predicted device peak <= ``budget`` (and host peak <=
    ``host_budget`` when given); ``None`` when the peaks do not grow with frames; 0 when even one
    frame does not fit.

    Args:
        w: the workload (scaled with :meth:`Workload.with_frames`) or a function giving the
            workload at ``n`` frames (e.g. the synthetic scenario's, whose late object enters
            at a frame that depends on ``n``).
    """
    make = w if callable(w) else w.with_frames
    n0 = 64 if callable(w) else max(w.num_frames, 64)

    def peaks(n: int) -> tuple[int, int]:
        p = predict(make(n), c, model, device_kind, host_baseline)
        return p["device_peak_bytes"], p["host_peak_bytes"] if host_budget is not None else 0

    def fits(n: int) -> bool:
        dev, host = peaks(n)
        return dev <= budget and (host_budget is None or host <= host_budget)

    (dev_max, host_max), (dev_0, host_0) = peaks(limit), peaks(n0)
    if dev_max <= dev_0 and host_max <= host_0:  # the peaks do not grow with frames
        return None if fits(limit) else 0
    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi < limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit)
    if fits(hi):
        return hi
    while hi - lo > 1:  # fits(lo), not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo

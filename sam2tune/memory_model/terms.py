"""The memory model's terms: every byte SAM 2 keeps on the accelerator and the host under a
candidate's knobs (exact sizes where SAM 2's code fixes them, fitted activations and host terms),
summed into the predicted peaks; the frames that fit a budget."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sam2tune.memory_model.host_probe import PROBE_FRAMES, solve_allocator
from sam2tune.memory_model.model_file import MemoryModel
from sam2tune.memory_model.reads import STREAM_WINDOW, _arch, _es, _sizes, memory_read
from sam2tune.memory_model.trust import trust_region
from sam2tune.memory_model.workload import Candidate, Workload
from sam2tune.metrics import MaskDir  # its write queue is part of stream's host memory
from sam2tune.units import fmt_bytes

if TYPE_CHECKING:
    from sam2tune.adapter.arch import Arch


@dataclass(frozen=True)
class Prediction:
    """What :func:`predict` answers for one workload under one candidate's knobs."""

    #: accelerator bytes by term (weights, frames, state, cached_features, activations,
    #: bank_copy, output_masks, cuda_fixed on CUDA)
    terms: dict[str, int]
    #: host RAM bytes by term (baseline, frames and state offloaded, masks, allocator, ...)
    host_terms: dict[str, int]
    #: the accelerator's predicted peak: the sum of ``terms`` (bytes)
    device_peak_bytes: int
    #: the host's predicted peak RSS: the sum of ``host_terms`` (bytes)
    host_peak_bytes: int
    #: one step's activations by phase: image_encoder, memory_attention, peak (bytes)
    activation_phases: dict[str, int]
    #: what memory attention reads at the step that reads most: frames, pointers, tokens,
    #: batch (objects at once)
    memory_read: dict[str, int]
    #: the calibration the coefficients came from (runs, devices, weights, target)
    calibrated_on: dict[str, Any]
    #: the trust note: ``inside`` the calibration region, per-axis verdicts, ``statement``
    trust: dict[str, Any]
    #: the model's input resolution S the prediction is for (px)
    image_size: int
    #: where each host term comes from: measured on this machine (the baseline; the allocator
    #: under local host terms), the calibration's fit, or exact (SAM 2's sizes)
    host_sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``sam2tune predict format=json`` prints it, with the workload added)."""
        return dataclasses.asdict(self)


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
    w: Workload,
    c: Candidate,
    k: dict[str, float],
    S: int,
    arch: Arch,
    res: _Resident,
    read: dict[str, int],
    act_peak: int,
    device_kind: str,
) -> tuple[dict[str, int], int]:
    """The accelerator's terms (integer bytes) and the features transformers keeps on the host
    (offload_state_to_cpu), counted with the host's terms."""
    z = _sizes(S, arch.mem_dim, _es(c))
    hf = c.impl == "transformers"
    # offload_state: the memory bank read this step is copied back to the device (bf16 maskmem);
    # transformers keeps the memory bank on the device whatever the state device
    bank = read["frames"] * z["maskmem"] * read["batch"] if c.offload_state_to_cpu else 0
    if c.predictor == "per_object" and read["batch"] > 1 and not c.offload_state_to_cpu:
        # object_batch: the batch's memories read this step, stacked (a copy on the device)
        bank = read["frames"] * z["maskmem"] * read["batch"]
    # transformers keeps vision_features_cache frames' features on its state device (the host
    # with offload_state_to_cpu); sam2's one frame of features: fitted
    feat = min(c.vision_features_cache, w.num_frames) * z["hf_features"] if hf else 0
    feat_host = feat if c.offload_state_to_cpu else 0
    terms = {
        # transformers with dtype=bfloat16 casts the model itself (its weights 2 bytes each);
        # Meta's sam2 autocasts, its weights stay float32
        "weights": int(w.weights_bytes) // (2 if hf and c.dtype == "bfloat16" else 1),
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
    host_terms: str = "auto",
) -> Prediction:
    """Predicted peaks, term by term (integer bytes), for workload ``w`` under knobs ``c``.

    Args:
        host_baseline: the run process's peak RSS before SAM 2 allocates, on the machine that
            predicts (default: measured once and cached, see
            :func:`sam2tune.memory_model.baseline.host_baseline`).
        host_resident: its resident RSS at that point (default: ``host_baseline``). On CUDA the
            peak includes a transient of the context's start that later phases may not exceed:
            host peak = max(baseline peak, resident + the run's host terms).
        host_terms: where the fitted host term (``allocator``) comes from: ``calibrated`` (the
            calibration's coefficients), ``local`` (solved from this machine's probe runs, see
            :mod:`sam2tune.memory_model.host_probe`; CPU only) or ``auto`` (default: local on
            the CPU when the baseline is this machine's, i.e. ``host_baseline`` not given, else
            calibrated; ``$SAM2TUNE_HOST_TERMS=calibrated`` turns local terms off).

    Returns:
        The :class:`Prediction`, every size in integer bytes.
    """
    k, source = model.kind(device_kind)
    S = c.image_size or w.image_size
    arch = _arch(w.model)
    res = _resident(w, c, S, arch)
    read = memory_read(w, c, S)
    act = activations(w, c, k, read)
    terms, feat_host = _device_terms(w, c, k, S, arch, res, read, act["peak"], device_kind)
    device_peak = sum(terms.values())
    if feat_host:  # counted with the offloaded state in the host terms
        res = dataclasses.replace(res, state=res.state + feat_host)
    peaks = (act["peak"], device_peak)
    host, sources = _host_side(
        w, c, model, device_kind, res, peaks, host_baseline, host_resident, host_terms
    )
    cal = model.calibration.get(source.split(" ")[0], {})
    return Prediction(
        terms=terms,
        host_terms=host,
        device_peak_bytes=int(device_peak),
        host_peak_bytes=int(sum(host.values())),
        activation_phases=act,
        memory_read=read,
        calibrated_on=cal.get("summary", {}) | {"coefficients": source},
        trust=trust_region(w, c, cal, read),
        image_size=S,
        host_sources=sources,
    )


def _host_side(
    w: Workload,
    c: Candidate,
    model: MemoryModel,
    device_kind: str,
    res: _Resident,
    peaks: tuple[int, int],
    peak: int | None,
    resident: int | None,
    host_terms: str,
) -> tuple[dict[str, int], dict[str, str]]:
    """The host terms of :func:`predict` and where each comes from (``peaks``: the activation
    and device peaks; ``peak``, ``resident``: the given baseline, ``None`` = this machine's)."""
    k, source = model.kind(device_kind)
    S, (act_peak, device_peak) = c.image_size or w.image_size, peaks
    mode = _host_mode(host_terms, device_kind, peak)
    given = peak is not None
    hb: dict[str, Any] = {}
    if not given or mode == "local":
        from sam2tune.memory_model.baseline import host_baseline as measure

        hb = measure(device_kind, with_local=mode == "local")
    if peak is None:
        peak = int(hb["rss_bytes"])
        resident = int(hb.get("resident_bytes") or peak)
    resident = peak if resident is None else resident
    kh, alloc_src = k, f"calibration ({_calibration_label(model, source)})"
    if mode == "local":
        kh, alloc_src = _local_coeffs(
            model, device_kind, hb.get("local"), peak, resident, alloc_src
        )
    host = _host_terms(w, c, kh, S, res, act_peak, device_peak, device_kind, peak, resident)
    src = _host_sources(host, given, alloc_src)
    if not given and "no CUDA here" in str(hb.get("figure", "")):  # a GPU planned from a CPU
        cal = model.calibration.get(device_kind, {}).get("host_baseline_bytes")
        src["baseline"] = (
            "measured on this machine, which has no CUDA: the CUDA context's host side is not "
            "in it" + (f" (a CUDA run's baseline on the calibration machine: {fmt_bytes(cal)})"
                       if cal else "")
        )
    return host, src


#: predict's ``host_terms`` choices, and the environment variable ``auto`` reads
HOST_TERMS = ("auto", "calibrated", "local")
HOST_TERMS_ENV = "SAM2TUNE_HOST_TERMS"


def _host_mode(host_terms: str, device_kind: str, host_baseline: int | None) -> str:
    """``local`` or ``calibrated``: where the fitted host term comes from (see :func:`predict`)."""
    if host_terms not in HOST_TERMS:
        raise ValueError(f"host_terms: must be one of {', '.join(HOST_TERMS)}, got {host_terms!r}")
    if host_terms == "auto":
        env = os.environ.get(HOST_TERMS_ENV, "auto")
        if env == "calibrated":
            return "calibrated"
        host_terms = "local" if host_baseline is None else "calibrated"
    # the probe's runs are CPU runs: CUDA's host terms (cuDNN / cuBLAS, the weights' build on
    # the host) are not what they measure
    return host_terms if device_kind == "cpu" else "calibrated"


def _calibration_label(model: MemoryModel, source: str) -> str:
    cal = model.calibration.get(source.split(" ")[0], {})
    devices = ", ".join(cal.get("summary", {}).get("devices", [])) or "?"
    return f"{source}: {cal.get('runs', '?')} runs on {devices}"


#: solved local coefficients by (coefficients, probe runs, baseline): predict runs often
_LOCAL: dict[str, tuple[dict[str, float], str]] = {}


def _local_coeffs(
    model: MemoryModel,
    device_kind: str,
    local: dict[str, Any] | None,
    baseline: int,
    resident: int,
    calibrated: str,
) -> tuple[dict[str, float], str]:
    """The coefficients with this machine's host constant and per-pixel part (``h_0``,
    ``h_px``), solved from the probe runs (:mod:`sam2tune.memory_model.host_probe`): each run's
    measured peak minus every other host term this model gives for that run (its baseline: the
    run's own where recorded, else ``baseline``), the calibration's ``h_act`` / ``h_w`` shares
    kept. Falls back to the calibration's, saying why, without runs."""
    k, _ = model.kind(device_kind)
    runs = (local or {}).get("runs")
    if not runs:
        why = (local or {}).get("error", "no probe runs")
        return k, f"{calibrated}; local host terms unavailable: {why}"
    key = json.dumps([k, runs, baseline, resident], sort_keys=True)
    if key not in _LOCAL:
        pts = []
        for r in runs:
            w = Workload(**r["workload"])
            # each probe run against its own process's baseline where it recorded one: the
            # solved terms are then what a run adds above its baseline, whatever the page
            # cache's state when the probe ran (the file-backed library pages at import moved
            # by up to 190 MiB on one machine between two installations, same imports)
            own = r.get("baseline_rss_bytes")
            b, rb = ((int(own), int(r.get("baseline_resident_bytes") or own)) if own
                     else (baseline, resident))
            p = predict(w, Candidate(), model, device_kind, b, rb, "calibrated")
            share = (
                k.get("h_act", 0.0) * p.activation_phases["peak"]
                + k.get("h_w", 0.0) * w.weights_bytes
            )
            known = p.host_peak_bytes - p.host_terms["allocator"]
            pts.append((p.image_size, r["peak_host_rss_bytes"] - known - share))
        h_0, h_px = solve_allocator(pts)
        sizes = "+".join(str(r["image_size"]) for r in runs)
        _LOCAL[key] = (
            dict(k, h_0=h_0, h_px=h_px),
            f"measured on this machine: solved from {len(runs)} probe runs ({sizes} px, "
            f"{PROBE_FRAMES} frames, sam2.1_tiny), h_act/h_w shares from the calibration",
        )
    return _LOCAL[key]


def _host_sources(host: dict[str, int], given: bool, allocator: str) -> dict[str, str]:
    """Where each host term of a prediction comes from."""
    out = {}
    for name in host:
        if name == "baseline":
            out[name] = "given" if given else "measured on this machine (host-baseline probe)"
        elif name == "allocator":
            out[name] = allocator
        else:
            out[name] = "exact (SAM 2's sizes and the model's device terms)"
    return out


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
        return p.device_peak_bytes, p.host_peak_bytes if host_budget is not None else 0

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

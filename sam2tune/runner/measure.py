"""The work of one run, inside its isolated process: build SAM 2, prompt, propagate with probes,
score, and return the measures. Called by :mod:`sam2tune.runner.child`; tests may call it too.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from sam2tune.adapter.arch import arch_of_predictor
from sam2tune.adapter.build import BuiltPredictor, Predictor, build_impl
from sam2tune.adapter.census import Census
from sam2tune.adapter.hf import HFPredictor, HFSession
from sam2tune.adapter.segments import SegmentedSession
from sam2tune.adapter.session import FrameStep, PromptStep, Session, VideoSession
from sam2tune.config.schema import KnobsConfig, RunConfig
from sam2tune.errors import InputError
from sam2tune.metrics import JF, MaskDir, MaskSet, iou_vs_labels, jf_vs_labels
from sam2tune.probes import NvmlSampler, TensorTracker, peak_rss_bytes, rss_bytes
from sam2tune.provenance import environment
from sam2tune.runner.limits import apply_device_budget
from sam2tune.runner.reference import compare_with_reference
from sam2tune.scenario import Prompt
from sam2tune.video.sources import VideoData

__all__ = ["resolve_device", "measure_run", "propagate", "Propagation", "ESTIMATE_METHOD"]

PROGRESS_TAG = "SAM2TUNE-PROGRESS"

ESTIMATE_METHOD = (
    "census+tracked-activations: weights_bytes + max over frames of the inference-state bytes "
    "that SAM 2 keeps on the compute device under the run's knobs (census by role) + the largest "
    "one-step transient of tensor storages allocated under a TorchDispatchMode on the last "
    "probe.track_frames frames and on each prompt + (offload_state_to_cpu) the memory bank "
    "copied to the device per step"
)


def resolve_device(name: str) -> torch.device:
    """``auto`` / ``cpu`` / ``cuda[:i]`` as a torch device (one-line error without CUDA)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device: cuda requested but no CUDA device is available")
    return torch.device(name)


class TimelineRow(TypedDict, total=False):
    """One propagated frame in ``report.json``'s timeline (bytes are integers)."""

    frame: int
    t_s: float
    step_s: float
    tracked: bool
    objects: int
    frames_bytes: int
    state_bytes: int
    cached_features_bytes: int
    device_resident_bytes: int
    host_rss_bytes: int
    cuda_allocated_bytes: int  # CUDA only
    cuda_step_peak_bytes: int  # CUDA only
    frames_held: int  # strategy=stream / segments


@dataclass
class Propagation:
    """What one session produced."""

    masks: MaskSet | MaskDir  # MaskDir: written to disk as they come (stream, long videos)
    init_s: float
    prompt_s: float
    fps: float | None
    timed_frames: int
    timeline: list[TimelineRow] = field(default_factory=list)
    activation_peak_bytes: int = 0  # tracked (dispatch) transient
    cuda_step_peak_bytes: int | None = None
    cuda_peak_bytes: int | None = None  # max_memory_allocated over the session
    resident_max_bytes: int = 0
    frames_bytes: int = 0
    state_bytes: int = 0
    cached_features_bytes: int = 0
    bank_copy_bytes: int = 0
    frames_held_max: int = 0  # strategy=stream / segments: most decoded frames held at once
    frame_wait_s: float | None = None  # strategy=stream: time the loop waited on decoding


class FrameProbe:
    """The light per-frame probes: after each propagated frame, a timeline row (census by role,
    host RSS, and on CUDA the allocator's step peak) and the running maxima in ``res``."""

    def __init__(self, dev: torch.device, res: Propagation) -> None:
        self.dev, self.res = dev, res
        self.cuda = dev.type == "cuda"
        self.peak_carry = 0  # the allocator's peak before each per-step reset
        self.step_peak = 0
        self.alloc0 = 0
        self.last_census: Census | None = None
        self.last_objects = 0

    def before_step(self) -> None:
        """Reset the allocator's step peak (CUDA) before SAM 2's next step."""
        if self.cuda:
            self.peak_carry = max(self.peak_carry, torch.cuda.max_memory_allocated(self.dev))
            torch.cuda.reset_peak_memory_stats(self.dev)
            self.alloc0 = torch.cuda.memory_allocated(self.dev)

    def after_frame(
        self, sess: VideoSession, ev: FrameStep, dt: float, tracked: bool, t_s: float
    ) -> None:
        """Record one propagated frame's timeline row and running maxima."""
        c = sess.census()
        row: TimelineRow = {
            "frame": ev.frame_idx,
            "t_s": round(t_s, 6),
            "step_s": round(dt, 6),
            "tracked": tracked,
            "objects": len(ev.obj_ids),
            "frames_bytes": c.frames_bytes,
            "state_bytes": c.state_bytes,
            "cached_features_bytes": c.cached_features_bytes,
            "device_resident_bytes": c.device_resident_bytes,
            "host_rss_bytes": rss_bytes(),
        }
        res = self.res
        if self.cuda:
            step_peak = torch.cuda.max_memory_allocated(self.dev) - self.alloc0
            self.step_peak = max(self.step_peak, step_peak)
            row["cuda_allocated_bytes"] = int(torch.cuda.memory_allocated(self.dev))
            row["cuda_step_peak_bytes"] = int(step_peak)
        if sess.frames is not None:
            row["frames_held"] = len(sess.frames.images)
            res.frames_held_max = max(res.frames_held_max, row["frames_held"])
        res.timeline.append(row)
        res.resident_max_bytes = max(res.resident_max_bytes, c.device_resident_bytes)
        res.frames_bytes = max(res.frames_bytes, c.frames_bytes)
        res.state_bytes = max(res.state_bytes, c.state_bytes)
        res.cached_features_bytes = max(res.cached_features_bytes, c.cached_features_bytes)
        self.last_census, self.last_objects = c, len(ev.obj_ids)

    def finish(self) -> None:
        """The session's CUDA peaks into the propagation's result."""
        if self.cuda:
            self.res.cuda_step_peak_bytes = int(self.step_peak)
            self.res.cuda_peak_bytes = int(
                max(self.peak_carry, torch.cuda.max_memory_allocated(self.dev))
            )


def _bank_copy_bytes(
    probe: FrameProbe, prompts: list[Prompt], knobs: KnobsConfig, predictor: Predictor
) -> int:
    """offload_state_to_cpu: the memory bank copied back to the device per step, sized from the
    final census and the frames one step reads."""
    c = probe.last_census
    if not knobs.offload_state_to_cpu or c is None or not c.maskmem_entries:
        return 0
    if _is_hf(predictor):  # transformers keeps the memory bank on the device (nothing copied)
        return 0
    per_obj_frame = c.maskmem_bytes // c.maskmem_entries
    attended = len({p.frame for p in prompts})
    if knobs.max_cond_frames_in_attn != -1:
        attended = min(attended, knobs.max_cond_frames_in_attn)
    batch = probe.last_objects if knobs.predictor == "legacy_batched" else 1
    return per_obj_frame * (attended + arch_of_predictor(predictor).num_maskmem - 1) * batch


def _is_hf(predictor: Predictor) -> bool:
    """Whether ``predictor`` is transformers' (impl=transformers)."""
    return isinstance(predictor, HFPredictor)


def _open_session(
    predictor: Predictor, video: VideoData, knobs: KnobsConfig, mask_dir: Path | None
) -> tuple[VideoSession, MaskSet | MaskDir]:
    sess: VideoSession
    if _is_hf(predictor):  # knobs it lacks (strategies, segments) were refused at config time
        return HFSession(predictor, video.sam2_path, knobs), MaskSet(video.height, video.width)
    if knobs.segment_frames:
        sess = SegmentedSession(predictor, video.sam2_path, knobs, video.num_frames)
    else:
        sess = Session(predictor, video.sam2_path, knobs)
    if knobs.strategy != "stream":
        return sess, MaskSet(video.height, video.width)
    root = mask_dir if mask_dir is not None else Path(tempfile.mkdtemp(prefix="sam2tune-masks-"))
    return sess, MaskDir(root, video.height, video.width)


def _next_step(events: Iterator[Any], tracker: TensorTracker | None) -> tuple[Any, float] | None:
    """SAM 2's next unit of work (under the tensor tracker when given) and its wall time; None
    at the end. The masks' copy to the host inside the step synchronises the device."""
    t1 = time.perf_counter()
    try:
        with tracker if tracker is not None else nullcontext():
            if tracker is not None:
                tracker.begin_step()
            ev = next(events)
    except StopIteration:
        return None
    return ev, time.perf_counter() - t1


def _report_progress(done: int, total: int, elapsed: float) -> None:
    """``PROGRESS <done> <total> <seconds>`` on stderr (the parent shows a progress line)."""
    print(f"{PROGRESS_TAG} {done} {total} {elapsed:.3f}", file=sys.stderr, flush=True)


def propagate(
    predictor: Predictor,
    video: VideoData,
    prompts: list[Prompt],
    knobs: KnobsConfig,
    dev: torch.device,
    track_frames: int = 0,
    probes: bool = True,
    mask_dir: Path | None = None,
    progress: bool = False,
) -> Propagation:
    """Run one SAM 2 session: init_state, every prompt, then propagate through the video.

    Args:
        track_frames: the last N frames (and every prompt) run under :class:`TensorTracker` to
            measure the step's activation peak; they are excluded from fps.
        probes: take the per-frame census / RSS timeline (light).
        mask_dir: where ``strategy=stream`` writes masks (default: a temporary folder).
        progress: print ``PROGRESS <done> <total> <seconds>`` after each frame on stderr (the
            parent turns it into a progress line).
    """
    sess, masks = _open_session(predictor, video, knobs, mask_dir)
    bf16 = knobs.dtype == "bfloat16" and not _is_hf(predictor)  # transformers: a bf16 model
    amp = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    tracker = TensorTracker() if track_frames else None
    res = Propagation(masks, 0.0, 0.0, None, 0)
    probe = FrameProbe(dev, res)
    with amp:
        sess.init()
        order = list(range(min(p.frame for p in prompts), video.num_frames))
        n_track = min(track_frames, max(len(order) - 1, 0)) if tracker is not None else 0
        tracked = set(order[len(order) - n_track :]) if n_track else set()
        events = sess.track(prompts)
        timed_s, timed, step = 0.0, 0, 0
        t_prop = time.perf_counter()
        while True:
            nxt = order[step] if step < len(order) else None
            track_now = tracker is not None and (nxt in tracked or sess.next_is_prompt)
            probe.before_step()
            stepped = _next_step(events, tracker if track_now else None)
            if stepped is None:
                break
            ev, dt = stepped
            if isinstance(ev, PromptStep):
                res.prompt_s += dt
            if not isinstance(ev, FrameStep):  # a prompt, or a segment's session started
                continue
            step += 1
            if progress:
                _report_progress(step, len(order), time.perf_counter() - t_prop)
            if ev.frame_idx not in tracked:
                timed_s, timed = timed_s + dt, timed + 1
            masks.add(ev.frame_idx, ev.obj_ids, ev.masks)
            if probes:
                probe.after_frame(
                    sess, ev, dt, ev.frame_idx in tracked, time.perf_counter() - t_prop
                )
    if isinstance(masks, MaskDir):
        masks.close()  # every queued mask on disk before the run counts as done
    res.bank_copy_bytes = _bank_copy_bytes(probe, prompts, knobs, predictor)
    if tracker is not None:
        tracker.end()
        res.activation_peak_bytes = max(tracker.step_peaks, default=0)
    probe.finish()
    res.init_s = sess.init_s  # segments: every segment's init_state
    res.timed_frames = timed
    res.fps = timed / timed_s if timed and timed_s > 0 else None
    sess.close()
    if knobs.strategy == "stream":
        res.frame_wait_s = sess.frame_wait_s
    return res


def _start(cfg: RunConfig, dev: torch.device, context: dict[str, Any]) -> dict[str, Any]:
    """Provenance, the host baseline, the memory recorder and the device budget, before SAM 2
    allocates anything."""
    env = environment(dev)  # on CUDA this creates the context (mem_get_info)
    # the process before SAM 2 allocates anything: what the memory model calls the host baseline
    # (peak so far, and resident now: on CUDA the peak includes a transient of the context's start)
    env["baseline_rss_bytes"] = peak_rss_bytes()
    env["baseline_resident_bytes"] = rss_bytes()
    context.update(device=dev.type, device_name=env.get("device_name"))
    if cfg.probe.memory_snapshot and dev.type != "cuda":
        raise InputError(f"probe.memory_snapshot=true: needs a CUDA device (this run: {dev.type})")
    if cfg.probe.memory_snapshot:  # PyTorch's allocator recorder, for its memory_viz viewer
        torch.cuda.memory._record_memory_history(max_entries=200_000)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        apply_device_budget(dev, cfg.limits.device_budget_bytes)
    return env


def _measures(
    dev: torch.device,
    env: dict[str, Any],
    built: BuiltPredictor,
    prop: Propagation,
    total_s: float,
    sampler: Any,
) -> dict[str, Any]:
    """The run's figures (columns of :data:`sam2tune.record.COLUMNS`)."""
    m: dict[str, Any] = {
        "device": dev.type,
        "device_name": env.get("device_name"),
        "weights": built.weights,
        "peak_host_rss_bytes": peak_rss_bytes(),
        "frames_bytes": prop.frames_bytes,
        "state_bytes": prop.state_bytes,
        "cached_features_bytes": prop.cached_features_bytes,
        "weights_bytes": built.weights_bytes,
        "activation_peak_bytes": prop.activation_peak_bytes,
        "fps": prop.fps,
        "init_s": prop.init_s,
        "frame_wait_s": prop.frame_wait_s,
        "total_s": total_s,
    }
    m["est_host_peak_bytes"] = m["peak_host_rss_bytes"]
    m["est_device_peak_bytes"] = (
        built.weights_bytes
        + prop.resident_max_bytes
        + prop.activation_peak_bytes
        + prop.bank_copy_bytes
    )
    if dev.type == "cuda":
        # the per-frame step peaks reset the allocator's peak; the session carries the maximum
        m["cuda_max_allocated_bytes"] = int(
            max(prop.cuda_peak_bytes or 0, torch.cuda.max_memory_allocated(dev))
        )
        m["cuda_max_reserved_bytes"] = int(torch.cuda.max_memory_reserved(dev))
        m["nvml_peak_process_bytes"] = sampler.peak_process or None
        m["nvml_peak_device_bytes"] = sampler.peak_device
    return m


def memory_provenance(measures: dict[str, Any]) -> dict[str, str]:
    """Provenance of each memory figure present, from the column table (kind and meaning)."""
    from sam2tune.record import COLUMNS

    return {
        c.name: f"{c.kind} ({c.meaning})"
        for c in COLUMNS
        if c.name in measures and c.unit == "B" and c.kind in ("measured", "estimated")
    }


def _quality(
    cfg: RunConfig,
    video: VideoData,
    prompts: list[Prompt],
    built: BuiltPredictor,
    prop: Propagation,
    refs_dir: Path,
    cache_root: Path,
    dev: torch.device,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Quality of the run's masks: IoU, J, F and J&F vs ground truth and vs the reference (per
    object and per frame), and what happened with the reference."""
    measures: dict[str, Any] = {}
    per_obj_gt: dict[int, float] = {}
    jf_gt: JF | None = None
    if video.has_ground_truth:  # quality vs ground truth (J = IoU, F = contour accuracy)
        per_obj_gt = iou_vs_labels(prop.masks, video.labels, video.num_frames)
        measures["iou_gt_mean"] = float(np.mean(list(per_obj_gt.values()))) if per_obj_gt else None
        jf_gt = jf_vs_labels(prop.masks, video.labels, video.num_frames)
        measures["j_mean"], measures["f_mean"], measures["jf_mean"] = jf_gt.means()
    # agreement with the reference run (every memory knob off)
    per_obj_ref, ref_info = compare_with_reference(
        cfg, video, prompts, built, prop.masks, refs_dir, cache_root, dev
    )
    if per_obj_ref:
        measures["iou_ref_mean"] = float(np.mean(list(per_obj_ref.values())))
    jf_ref: JF | None = ref_info.pop("jf", None)
    if jf_ref is not None:
        measures["j_ref_mean"], measures["f_ref_mean"], measures["jf_ref_mean"] = jf_ref.means()
    return {
        "measures": measures,
        "per_object": {
            str(i): {
                "iou_gt": per_obj_gt.get(i),
                "iou_ref": per_obj_ref.get(i),
                "j_gt": jf_gt.j.get(i) if jf_gt else None,
                "f_gt": jf_gt.f.get(i) if jf_gt else None,
                "j_ref": jf_ref.j.get(i) if jf_ref else None,
                "f_ref": jf_ref.f.get(i) if jf_ref else None,
            }
            for i in prop.masks.obj_ids
        },
        # J&F per frame (mean over objects): quality along the video
        "quality_per_frame": {
            "jf_gt": {str(t): v for t, v in jf_gt.per_frame.items()} if jf_gt else None,
            "jf_ref": {str(t): v for t, v in jf_ref.per_frame.items()} if jf_ref else None,
        },
    }, ref_info


def measure_run(
    cfg: RunConfig,
    video: VideoData,
    prompts: list[Prompt],
    refs_dir: Path,
    cache_root: Path,
    context: dict[str, Any] | None = None,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the configured experiment and return its measures, timeline and provenance.

    Args:
        context: filled as soon as each figure is known (device, device_name, weights), so a
            run that fails part-way still reports them.
    """
    t_start = time.perf_counter()
    context = {} if context is None else context
    dev = resolve_device(cfg.device)
    env = _start(cfg, dev, context)
    built = build_impl(cfg.impl.name, cfg.model, cfg.knobs, dev, cache_root)
    if cfg.impl.name == "transformers":
        from sam2tune.adapter.hf import hf_version

        env["transformers_version"] = hf_version()
    context.update(weights=built.weights, weights_bytes=built.weights_bytes)
    sampler = NvmlSampler(dev.index or 0) if dev.type == "cuda" else nullcontext()
    with sampler:
        prop = propagate(
            built.predictor,
            video,
            prompts,
            cfg.knobs,
            dev,
            track_frames=cfg.probe.track_frames,
            mask_dir=work_dir / "masks" if work_dir is not None else None,
            progress=True,
        )
    total_s = time.perf_counter() - t_start
    if cfg.probe.memory_snapshot:
        if work_dir is not None:
            torch.cuda.memory._dump_snapshot(str(work_dir / "memory_snapshot.pickle"))
        torch.cuda.memory._record_memory_history(enabled=None)
    measures = _measures(dev, env, built, prop, total_s, sampler)
    quality, ref_info = _quality(cfg, video, prompts, built, prop, refs_dir, cache_root, dev)
    measures.update(quality.pop("measures"))
    return {
        "measures": measures,
        "timeline": prop.timeline,
        **quality,
        "reference": ref_info,
        "environment": env,
        "impl": cfg.impl.name,
        "sam2_overrides": built.overrides if cfg.impl.name == "sam2" else [],
        "transformers_settings": built.overrides if cfg.impl.name == "transformers" else None,
        "checkpoint_path": built.checkpoint_path,
        "memory_provenance": memory_provenance(measures),
        "estimate": {
            "method": ESTIMATE_METHOD,
            "weights_bytes": built.weights_bytes,
            "resident_max_bytes": prop.resident_max_bytes,
            "activation_peak_bytes": prop.activation_peak_bytes,
            "bank_copy_bytes": prop.bank_copy_bytes,
            "cuda_step_peak_bytes": prop.cuda_step_peak_bytes,
        },
        "bounded_memory": {
            "strategy": cfg.knobs.strategy,
            "segment_frames": cfg.knobs.segment_frames,
            "frames_held_max": prop.frames_held_max,
            "stream_prefetch": cfg.knobs.stream_prefetch if cfg.knobs.strategy == "stream" else 0,
            "frame_wait_s": prop.frame_wait_s,
            "masks_written": isinstance(prop.masks, MaskDir),
        },
        "speed": {
            "timed_frames": prop.timed_frames,
            "tracked_frames": cfg.probe.track_frames,
            "prompt_s": prop.prompt_s,
        },
    }

"""The work of one run, inside its isolated process: build SAM 2, prompt, propagate with probes,
score, and return the measures. Called by :mod:`sam2tune.runner.child`; tests may call it too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sam2tune.adapter.build import build_predictor
from sam2tune.adapter.census import Census
from sam2tune.adapter.segments import SegmentedSession
from sam2tune.adapter.session import Session
from sam2tune.config.schema import KnobsConfig, RunConfig
from sam2tune.errors import InputError
from sam2tune.metrics import MaskDir, MaskSet, agreement, iou_vs_labels
from sam2tune.probes import NvmlSampler, TensorTracker, peak_rss_bytes, rss_bytes
from sam2tune.provenance import environment
from sam2tune.scenario import Prompt
from sam2tune.video.sources import VideoData

__all__ = ["resolve_device", "run_experiment", "propagate", "Propagation", "ESTIMATE_METHOD"]

PROGRESS_TAG = "SAM2TUNE-PROGRESS"

ESTIMATE_METHOD = (
    "census+tracked-activations: weights_bytes + max over frames of the inference-state bytes "
    "that SAM 2 keeps on the compute device under the run's knobs (census by role) + the largest "
    "one-step transient of tensor storages allocated under a TorchDispatchMode on the last "
    "probe.track_frames frames and on each prompt + (offload_state_to_cpu) the memory bank "
    "copied to the device per step"
)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device: cuda requested but no CUDA device is available")
    return torch.device(name)


@dataclass
class Propagation:
    """What one session produced."""

    masks: MaskSet
    init_s: float
    prompt_s: float
    fps: float | None
    timed_frames: int
    timeline: list[dict[str, Any]] = field(default_factory=list)
    activation_peak_bytes: int = 0  # tracked (dispatch) transient
    cuda_step_peak_bytes: int | None = None
    cuda_peak_bytes: int | None = None  # max_memory_allocated over the session
    resident_max_bytes: int = 0
    frames_bytes: int = 0
    state_bytes: int = 0
    cached_features_bytes: int = 0
    bank_copy_bytes: int = 0
    frames_held_max: int = 0  # strategy=stream / segments: most decoded frames held at once


def propagate(
    predictor: torch.nn.Module,
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
    sess: Session | SegmentedSession
    if knobs.segment_frames:
        sess = SegmentedSession(predictor, video.sam2_path, knobs, video.num_frames)
    else:
        sess = Session(predictor, video.sam2_path, knobs)
    amp = (
        torch.autocast(dev.type, dtype=torch.bfloat16)
        if knobs.dtype == "bfloat16"
        else nullcontext()
    )
    tracker = TensorTracker() if track_frames else None
    masks: MaskSet | MaskDir
    if knobs.strategy == "stream":
        root = (
            mask_dir if mask_dir is not None else Path(tempfile.mkdtemp(prefix="sam2tune-masks-"))
        )
        masks = MaskDir(root, video.height, video.width)
    else:
        masks = MaskSet(video.height, video.width)
    timeline: list[dict[str, Any]] = []
    cuda = dev.type == "cuda"
    cuda_peak_carry = 0
    cuda_step_peak = 0
    res = Propagation(masks, 0.0, 0.0, None, 0)
    last_census: Census | None = None
    last_objects = 0
    with amp:
        sess.init()
        res.init_s = sess.init_s
        start = min(p.frame for p in prompts)
        order = list(range(start, video.num_frames))
        n_track = min(track_frames, max(len(order) - 1, 0)) if tracker is not None else 0
        tracked = set(order[len(order) - n_track :]) if n_track else set()
        events = sess.track(prompts)
        timed_s, timed, step = 0.0, 0, 0
        t_prop = time.perf_counter()
        while True:
            nxt_frame = order[step] if step < len(order) else None
            is_tracked = tracker is not None and (nxt_frame in tracked or sess.next_is_prompt)
            if cuda:
                cuda_peak_carry = max(cuda_peak_carry, torch.cuda.max_memory_allocated(dev))
                torch.cuda.reset_peak_memory_stats(dev)
                alloc0 = torch.cuda.memory_allocated(dev)
            t1 = time.perf_counter()
            try:
                if is_tracked:
                    assert tracker is not None
                    with tracker:
                        tracker.begin_step()
                        ev = next(events)
                else:
                    ev = next(events)
            except StopIteration:
                break
            dt = time.perf_counter() - t1  # the masks' copy to the host synchronises
            if ev[0] == "prompt":
                res.prompt_s += dt
                continue
            if ev[0] == "init":  # a segment's session started (SegmentedSession)
                continue
            _, frame_idx, obj_ids, m = ev
            step += 1
            if progress:
                print(
                    f"{PROGRESS_TAG} {step} {len(order)} {time.perf_counter() - t_prop:.3f}",
                    file=sys.stderr,
                    flush=True,
                )
            if frame_idx not in tracked:
                timed_s += dt
                timed += 1
            masks.add(frame_idx, obj_ids, m)
            if not probes:
                continue
            c = sess.census()
            row = {
                "frame": frame_idx,
                "t_s": round(time.perf_counter() - t_prop, 6),
                "step_s": round(dt, 6),
                "tracked": frame_idx in tracked,
                "objects": len(obj_ids),
                "frames_bytes": c.frames_bytes,
                "state_bytes": c.state_bytes,
                "cached_features_bytes": c.cached_features_bytes,
                "device_resident_bytes": c.device_resident_bytes,
                "host_rss_bytes": rss_bytes(),
            }
            if cuda:
                step_peak = torch.cuda.max_memory_allocated(dev) - alloc0
                cuda_step_peak = max(cuda_step_peak, step_peak)
                row["cuda_allocated_bytes"] = int(torch.cuda.memory_allocated(dev))
                row["cuda_step_peak_bytes"] = int(step_peak)
            if sess.frames is not None:
                row["frames_held"] = len(sess.frames.images)
                res.frames_held_max = max(res.frames_held_max, row["frames_held"])
            timeline.append(row)
            res.resident_max_bytes = max(res.resident_max_bytes, c.device_resident_bytes)
            res.frames_bytes = max(res.frames_bytes, c.frames_bytes)
            res.state_bytes = max(res.state_bytes, c.state_bytes)
            res.cached_features_bytes = max(res.cached_features_bytes, c.cached_features_bytes)
            last_census, last_objects = c, len(obj_ids)
    if knobs.offload_state_to_cpu and last_census is not None and last_census.maskmem_entries:
        # the memory bank copied back to the device per step, sized from the final census
        per_obj_frame = last_census.maskmem_bytes // last_census.maskmem_entries
        attended = len({p.frame for p in prompts})
        if knobs.max_cond_frames_in_attn != -1:
            attended = min(attended, knobs.max_cond_frames_in_attn)
        batch = last_objects if knobs.predictor == "legacy_batched" else 1
        read = attended + predictor.num_maskmem - 1
        res.bank_copy_bytes = per_obj_frame * read * batch
    if tracker is not None:
        tracker.end()
        res.activation_peak_bytes = max(tracker.step_peaks, default=0)
    if cuda:
        res.cuda_step_peak_bytes = int(cuda_step_peak)
        res.cuda_peak_bytes = int(max(cuda_peak_carry, torch.cuda.max_memory_allocated(dev)))
    res.init_s = sess.init_s  # segments: every segment's init_state
    res.timeline = timeline
    res.timed_frames = timed
    res.fps = timed / timed_s if timed and timed_s > 0 else None
    sess.close()
    return res


def reference_image_size(cfg: RunConfig) -> int:
    return cfg.probe.reference_image_size or cfg.model.image_size


def is_own_reference(cfg: RunConfig) -> bool:
    """Every memory knob off, at the reference's resolution: the run is its own reference."""
    return not cfg.knobs.memory_saving() and reference_image_size(cfg) == cfg.model.image_size


def _prompts_digest(prompts: list[Prompt]) -> str:
    h = hashlib.sha256()
    for p in prompts:
        h.update(json.dumps(p.describe(), sort_keys=True, default=str).encode())
        if p.mask is not None:
            h.update(np.ascontiguousarray(p.mask).tobytes())
    return h.hexdigest()


def reference_key(
    cfg: RunConfig, video: VideoData, weights: str, prompts: list[Prompt] | None = None
) -> str:
    """What defines reference masks: frame content, annotations and the prompts derived from
    them, scenario, model, weights, image size and the reference's predictor."""
    d = {
        "video": video.source_id,
        "frames": video.num_frames,
        "annotations": video.annotations_dir and _dir_digest(Path(video.annotations_dir)),
        "prompts": _prompts_digest(prompts) if prompts is not None else None,
        "predictor": KnobsConfig().predictor,  # the reference always runs the default predictor
        "scenario": dataclasses.asdict(cfg.scenario),
        "model": cfg.model.config_file,
        "weights": weights
        if weights != "random-init"
        else f"random-init:{cfg.model.weights_seed}",
        "image_size": reference_image_size(cfg),
        "device": "same",  # masks are compared on the device kind that produced them
    }
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:20]


def _dir_digest(folder: Path) -> str:
    """Identity of a folder's files (names, sizes, modification times)."""
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    items = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def _save_masks(ms: MaskSet, path: Path, key: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        ms.save(tmp, key)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _lift_limits(dev: torch.device) -> None:
    """Lift the run's own limits (the reference run is not under the run's budget)."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (hard, hard))
    if dev.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(1.0, dev.index or 0)


def run_experiment(
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
    env = environment(dev)  # on CUDA this creates the context (mem_get_info)
    # the process before SAM 2 allocates anything: what the memory model calls the host baseline
    # (peak so far, and resident now: on CUDA the peak includes a transient of the context's start)
    env["baseline_rss_bytes"] = peak_rss_bytes()
    env["baseline_resident_bytes"] = rss_bytes()
    context.update(device=dev.type, device_name=env.get("device_name"))
    snapshot = cfg.probe.memory_snapshot
    if snapshot and dev.type != "cuda":
        raise InputError(f"probe.memory_snapshot=true: needs a CUDA device (this run: {dev.type})")
    if snapshot:  # PyTorch's allocator recorder, for its memory_viz viewer
        torch.cuda.memory._record_memory_history(max_entries=200_000)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        budget = cfg.limits.device_budget_bytes
        if budget:
            total = torch.cuda.get_device_properties(dev).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total), dev.index or 0)
    built = build_predictor(cfg.model, cfg.knobs, dev, cache_root)
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
    if snapshot:
        if work_dir is not None:
            torch.cuda.memory._dump_snapshot(str(work_dir / "memory_snapshot.pickle"))
        torch.cuda.memory._record_memory_history(enabled=None)
    measures: dict[str, Any] = {
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
        "total_s": total_s,
    }
    measures["est_host_peak_bytes"] = measures["peak_host_rss_bytes"]
    measures["est_device_peak_bytes"] = (
        built.weights_bytes
        + prop.resident_max_bytes
        + prop.activation_peak_bytes
        + prop.bank_copy_bytes
    )
    if dev.type == "cuda":
        # the per-frame step peaks reset the allocator's peak; the session carries the maximum
        measures["cuda_max_allocated_bytes"] = int(
            max(prop.cuda_peak_bytes or 0, torch.cuda.max_memory_allocated(dev))
        )
        measures["cuda_max_reserved_bytes"] = int(torch.cuda.max_memory_reserved(dev))
        measures["nvml_peak_process_bytes"] = sampler.peak_process or None  # type: ignore[union-attr]
        measures["nvml_peak_device_bytes"] = sampler.peak_device  # type: ignore[union-attr]
    # quality vs ground truth
    per_obj_gt: dict[int, float] = {}
    if video.has_ground_truth:
        per_obj_gt = iou_vs_labels(prop.masks, video.labels, video.num_frames)
        measures["iou_gt_mean"] = float(np.mean(list(per_obj_gt.values()))) if per_obj_gt else None
    # agreement with the reference run (every memory knob off)
    ref_info: dict[str, Any] = {
        "is_reference": is_own_reference(cfg),
        "image_size": reference_image_size(cfg),
    }
    per_obj_ref: dict[int, float] = {}
    if cfg.probe.reference:
        key = reference_key(cfg, video, built.weights, prompts)
        path = refs_dir / f"{key}.npz"
        ref_info.update(key=key, cached=path.is_file())
        if is_own_reference(cfg):
            per_obj_ref = {i: 1.0 for i in prop.masks.obj_ids}
            _save_masks(prop.masks, path, key)
        else:
            try:
                ref = None
                if path.is_file():
                    try:
                        ref = MaskSet.load(path, key)
                    except ValueError as e:  # damaged or another key's: recompute, say so
                        print(
                            f"sam2tune: reference cache {path} unusable ({e}); recomputing",
                            file=sys.stderr,
                        )
                        ref_info.update(cached=False, cache_error=str(e))
                if ref is None:
                    _lift_limits(dev)
                    t_ref = time.perf_counter()
                    ref_knobs = KnobsConfig()
                    rb = built
                    ref_model = dataclasses.replace(
                        cfg.model, image_size=reference_image_size(cfg)
                    )
                    if (
                        cfg.knobs.predictor != ref_knobs.predictor
                        or cfg.knobs.vos_optimized
                        or cfg.knobs.max_cond_frames_in_attn != -1
                        or ref_model != cfg.model
                    ):
                        del built.predictor
                        rb = build_predictor(ref_model, ref_knobs, dev, cache_root)
                    ref = propagate(
                        rb.predictor, video, prompts, ref_knobs, dev, probes=False
                    ).masks
                    _save_masks(ref, path, key)
                    ref_info["computed_s"] = time.perf_counter() - t_ref
                per_obj_ref = agreement(
                    prop.masks, ref, sorted(set(ref.frames) | set(prop.masks.frames))
                )
            except Exception as e:  # the reference failing must not fail the measured run
                ref_info["error"] = f"{type(e).__name__}: {e}"
        if per_obj_ref:
            measures["iou_ref_mean"] = float(np.mean(list(per_obj_ref.values())))
    measured = "measured" if dev.type == "cuda" else None
    return {
        "measures": measures,
        "timeline": prop.timeline,
        "per_object": {
            str(i): {"iou_gt": per_obj_gt.get(i), "iou_ref": per_obj_ref.get(i)}
            for i in prop.masks.obj_ids
        },
        "reference": ref_info,
        "environment": env,
        "sam2_overrides": built.overrides,
        "checkpoint_path": built.checkpoint_path,
        "memory_provenance": {
            "cuda_max_allocated_bytes": measured,
            "cuda_max_reserved_bytes": measured,
            "nvml_peak_process_bytes": measured,
            "nvml_peak_device_bytes": measured,
            "peak_host_rss_bytes": "measured (ru_maxrss of the run process)",
            "frames_bytes": "measured (census of the inference state)",
            "state_bytes": "measured (census of the inference state)",
            "cached_features_bytes": "measured (census of the inference state)",
            "weights_bytes": "measured (parameters + buffers)",
            "activation_peak_bytes": "measured (tracked tensor storages, TorchDispatchMode)",
            "est_device_peak_bytes": "estimated",
        },
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
            "masks_written": isinstance(prop.masks, MaskDir),
        },
        "speed": {
            "timed_frames": prop.timed_frames,
            "tracked_frames": cfg.probe.track_frames,
            "prompt_s": prop.prompt_s,
        },
    }

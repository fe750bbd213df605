"""The work of one run, inside its isolated process: build SAM 2, prompt, propagate with probes,
score, and return the measures. Called by :mod:`sam2tune.runner.child`; tests may call it too.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sam2tune.adapter.build import BuiltPredictor
from sam2tune.adapter.impls import build_impl
from sam2tune.config.schema import RunConfig
from sam2tune.errors import InputError
from sam2tune.metrics import JF, MaskDir, iou_vs_labels, jf_vs_labels
from sam2tune.probes import NvmlSampler, peak_rss_bytes, rss_bytes
from sam2tune.provenance import environment
from sam2tune.runner.limits import apply_device_budget
from sam2tune.runner.propagate import (
    PROGRESS_TAG,
    Propagation,
    propagate,
    resolve_device,
)
from sam2tune.runner.reference import compare_with_reference
from sam2tune.runner.report import RunReport
from sam2tune.scenario import Prompt
from sam2tune.video.sources import VideoData

__all__ = [
    "resolve_device",
    "measure_run",
    "RunReport",
    "propagate",
    "Propagation",
    "ESTIMATE_METHOD",
    "PROGRESS_TAG",
]

ESTIMATE_METHOD = (
    "census+tracked-activations: weights_bytes + max over frames of the inference-state bytes "
    "that SAM 2 keeps on the compute device under the run's knobs (census by role) + the largest "
    "one-step transient of tensor storages allocated under a TorchDispatchMode on the last "
    "probe.track_frames frames and on each prompt + (offload_state_to_cpu) the memory bank "
    "copied to the device per step"
)


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
        "warmup_s": prop.timing.warmup_s if prop.timing else None,
        "fps_spread": prop.timing.spread if prop.timing else None,
        "fps_method": prop.timing.method if prop.timing else None,
        "encoder_s": prop.encoder_s,
        "tracking_s": prop.tracking_s,
        "host_s": prop.host_s,
        "step_cores": prop.step_cores,
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
) -> RunReport:
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
    return _run_report(cfg, built, prop, measures, quality, ref_info, env)


def _run_report(
    cfg: RunConfig,
    built: BuiltPredictor,
    prop: Propagation,
    measures: dict[str, Any],
    quality: dict[str, Any],
    ref_info: Any,
    env: dict[str, Any],
) -> RunReport:
    """The run's :class:`RunReport` (the launcher adds the status, config and row)."""
    return RunReport(
        measures=measures,
        timeline=prop.timeline,
        per_object=quality["per_object"],
        quality_per_frame=quality["quality_per_frame"],
        reference=ref_info,
        environment=env,
        impl=cfg.impl.name,
        sam2_overrides=built.overrides if cfg.impl.name == "sam2" else [],
        transformers_settings=built.overrides if cfg.impl.name == "transformers" else None,
        checkpoint_path=built.checkpoint_path,
        memory_provenance=memory_provenance(measures),
        estimate={
            "method": ESTIMATE_METHOD,
            "weights_bytes": built.weights_bytes,
            "resident_max_bytes": prop.resident_max_bytes,
            "activation_peak_bytes": prop.activation_peak_bytes,
            "bank_copy_bytes": prop.bank_copy_bytes,
            "cuda_step_peak_bytes": prop.cuda_step_peak_bytes,
        },
        bounded_memory={
            "strategy": cfg.knobs.strategy,
            "segment_frames": cfg.knobs.segment_frames,
            "frames_held_max": prop.frames_held_max,
            "stream_prefetch": cfg.knobs.stream_prefetch if cfg.knobs.strategy == "stream" else 0,
            "frame_wait_s": prop.frame_wait_s,
            "masks_written": isinstance(prop.masks, MaskDir),
        },
        speed={
            "timed_frames": prop.timed_frames,
            "tracked_frames": cfg.probe.track_frames,
            "prompt_s": prop.prompt_s,
            "fps_method": prop.timing.method if prop.timing else None,
            "steady_frames": prop.timing.frames if prop.timing else 0,
        },
    )

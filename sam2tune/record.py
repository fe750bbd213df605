"""The record of one run: a flat row (the results table's contract) inside a nested report.json.

``COLUMNS`` documents every column: unit, meaning and whether it is measured, estimated or a
setting. Sizes are integer bytes. ``make_row`` is the only place a row is assembled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sam2tune.config.schema import RunConfig, config_hash

__all__ = ["COLUMNS", "Column", "make_row", "STATUSES", "SWEEP_ID_ENV"]

STATUSES = ("ok", "oom", "timeout", "crashed", "error")
#: set by a sweep for its points: their rows carry it as ``sweep_id``
SWEEP_ID_ENV = "SAM2TUNE_SWEEP_ID"


@dataclass(frozen=True)
class Column:
    """One column of the results table: unit, kind (setting / measured / ...) and meaning."""

    name: str
    unit: str
    kind: str  # setting | identity | measured | estimated | derived
    meaning: str


COLUMNS: list[Column] = [
    Column("run_id", "", "identity", "unique id of the run (time + random suffix)"),
    Column(
        "config_hash",
        "",
        "identity",
        "hash of what defines the outcome (sweeps skip done points by it)",
    ),
    Column("status", "", "identity", "ok | oom | timeout | crashed | error"),
    Column("error", "", "identity", "one-line error of a failed run (null when ok)"),
    Column("weights", "", "identity", "random-init or sha256:<checkpoint hash>"),
    Column("device", "", "setting", "cpu or cuda: where SAM 2 ran"),
    Column("device_name", "", "identity", "GPU name or CPU model"),
    Column("model", "", "setting", "model preset (sam2.1_tiny, ...)"),
    Column(
        "impl",
        "",
        "setting",
        "implementation: sam2 (Meta's package) | transformers (Hugging Face's Sam2VideoModel, "
        "Meta's weights converted); sam2 in rows written before the option",
    ),
    Column("image_size", "px", "setting", "model input resolution S (frames resized to S x S)"),
    Column("num_frames", "frames", "setting", "frames in the video"),
    Column("num_objects", "objects", "setting", "objects prompted and tracked"),
    Column("num_cond_frames", "frames", "setting", "distinct prompted (conditioning) frames"),
    Column("offload_video_to_cpu", "", "setting", "SAM 2 knob"),
    Column("offload_state_to_cpu", "", "setting", "SAM 2 knob"),
    Column("async_loading_frames", "", "setting", "SAM 2 knob"),
    Column("max_cond_frames_in_attn", "frames", "setting", "SAM 2 knob (-1 = all)"),
    Column("dtype", "", "setting", "float32 | bfloat16 (autocast)"),
    Column("predictor", "", "setting", "per_object | legacy_batched"),
    Column("vos_optimized", "", "setting", "SAM 2 knob (torch.compile)"),
    Column(
        "strategy", "", "setting", "stock | release | stream (sam2tune's bounded-memory modes)"
    ),
    Column("segment_frames", "frames", "setting", "segment length (0 = unsegmented)"),
    Column(
        "stream_prefetch",
        "frames",
        "setting",
        "strategy=stream: frames decoded ahead by background threads (0 in rows written before "
        "the knob existed)",
    ),
    Column(
        "vision_features_cache",
        "frames",
        "setting",
        "frames whose vision features are cached (transformers' max_vision_features_cache_size; "
        "sam2: 1)",
    ),
    Column(
        "object_batch",
        "objects",
        "setting",
        "objects tracked at once by the per-object predictor (1 = one at a time, 0 = all of a "
        "group; 1 in rows written before the knob existed)",
    ),
    Column("prompt", "", "setting", "box | points | mask"),
    Column(
        "reannotate_every", "frames", "setting", "re-prompt period (0 = first appearance only)"
    ),
    Column(
        "cuda_max_allocated_bytes",
        "B",
        "measured",
        "torch.cuda.max_memory_allocated over the run (null without CUDA)",
    ),
    Column(
        "cuda_max_reserved_bytes",
        "B",
        "measured",
        "torch.cuda.max_memory_reserved over the run (null without CUDA)",
    ),
    Column(
        "nvml_peak_process_bytes",
        "B",
        "measured",
        "NVML: peak GPU memory of the run process, sampled (null without CUDA)",
    ),
    Column(
        "nvml_peak_device_bytes",
        "B",
        "measured",
        "NVML: peak GPU memory used on the whole device, sampled (null without CUDA)",
    ),
    Column(
        "peak_host_rss_bytes",
        "B",
        "measured",
        "peak resident set size of the run process (VmHWM: its own, not its parent's)",
    ),
    Column(
        "frames_bytes",
        "B",
        "measured",
        "census: frame cache (inference_state['images']) at its largest",
    ),
    Column(
        "state_bytes",
        "B",
        "measured",
        "census: per-object outputs, prompts, constants at their largest",
    ),
    Column(
        "cached_features_bytes",
        "B",
        "measured",
        "census: cached backbone features at their largest",
    ),
    Column("weights_bytes", "B", "measured", "parameters + buffers of the model"),
    Column(
        "activation_peak_bytes",
        "B",
        "measured",
        "largest transient of one step (tracked tensor storages; CUDA: allocator)",
    ),
    Column(
        "est_device_peak_bytes",
        "B",
        "estimated",
        "accelerator peak estimate: weights + device-resident state + step activation peak (method in report.json)",
    ),
    Column(
        "est_host_peak_bytes",
        "B",
        "measured",
        "same as peak_host_rss_bytes (host figures are measured on every device)",
    ),
    Column(
        "iou_gt_mean",
        "",
        "measured",
        "mean IoU vs ground truth over objects (null without ground truth; random-init weights: not a quality figure)",
    ),
    Column(
        "j_mean",
        "",
        "measured",
        "DAVIS J (region IoU) vs ground truth, mean over objects (null without ground truth; random-init weights: not a quality figure)",
    ),
    Column(
        "f_mean",
        "",
        "measured",
        "DAVIS F (contour accuracy, boundary F-measure within 0.008 x diagonal) vs ground truth, mean over objects",
    ),
    Column("jf_mean", "", "measured", "DAVIS J&F = (j_mean + f_mean) / 2 vs ground truth"),
    Column(
        "j_ref_mean",
        "",
        "measured",
        "J vs the reference run's masks (agreement), mean over objects; 1.0 = identical",
    ),
    Column(
        "f_ref_mean",
        "",
        "measured",
        "F vs the reference run's masks (agreement), mean over objects; 1.0 = identical",
    ),
    Column("jf_ref_mean", "", "measured", "J&F vs the reference run's masks (agreement)"),
    Column(
        "iou_ref_mean",
        "",
        "measured",
        "mean IoU vs the reference run (same video/prompts/model, every memory knob off); 1.0 = identical",
    ),
    Column(
        "fps",
        "frames/s",
        "measured",
        "steady-state propagation frames per second (1 / the median step time): untracked frames, "
        "light probes only, the "
        "first two propagated frames (warm-up) excluded; rows re-derived from their timelines say "
        "so in fps_method",
    ),
    Column(
        "warmup_s",
        "s",
        "measured",
        "step time of the first two propagated frames (left out of fps)",
    ),
    Column(
        "fps_spread",
        "",
        "measured",
        "relative spread of the steady step times: (90th - 10th percentile) / median",
    ),
    Column(
        "fps_method",
        "",
        "identity",
        "how fps was computed (steady, or re-derived from the timeline; null in rows before it)",
    ),
    Column(
        "encoder_s",
        "s",
        "measured",
        "median over fps's frames of the image encoder's time within the step (Meta: "
        "forward_image; transformers: get_image_features); null where not timed",
    ),
    Column(
        "tracking_s",
        "s",
        "measured",
        "median over fps's frames of the rest of the step (step_s - encoder_s: memory attention, "
        "decoder, memory encoder per object, the masks' copy to the host)",
    ),
    Column(
        "host_s",
        "s",
        "measured",
        "median over fps's frames of sam2tune's own work between two steps (probes: census, RSS, "
        "CUDA counters; masks kept or queued to disk; not in fps)",
    ),
    Column(
        "step_cores",
        "",
        "measured",
        "median over fps's frames of the step's process CPU time / its wall time: the cores a "
        "step had (a CPU run beside other processes shows fewer than its torch threads)",
    ),
    Column("init_s", "s", "measured", "init_state time (frame loading)"),
    Column(
        "frame_wait_s",
        "s",
        "measured",
        "strategy=stream: time propagation waited on frame decoding (null otherwise)",
    ),
    Column(
        "total_s",
        "s",
        "measured",
        "wall time of the run process's work (build, init, prompts, propagation)",
    ),
    Column("results_version", "", "identity", "sam2tune version that wrote the row"),
    Column(
        "scheduler_job",
        "",
        "identity",
        "the batch job that ran it (slurm:<array job>_<task>); null when run directly",
    ),
    Column(
        "sweep_id",
        "",
        "identity",
        "the `sam2tune run -m` invocation that ran it (its summary counts its own rows); null "
        "for a single run and in rows written before the column",
    ),
]

_SETTINGS = {
    "device": None,
    "model": ("model", "name"),
    "impl": ("impl", "name"),
    "image_size": ("model", "image_size"),
    "offload_video_to_cpu": ("knobs", "offload_video_to_cpu"),
    "offload_state_to_cpu": ("knobs", "offload_state_to_cpu"),
    "async_loading_frames": ("knobs", "async_loading_frames"),
    "max_cond_frames_in_attn": ("knobs", "max_cond_frames_in_attn"),
    "dtype": ("knobs", "dtype"),
    "predictor": ("knobs", "predictor"),
    "vos_optimized": ("knobs", "vos_optimized"),
    "strategy": ("knobs", "strategy"),
    "segment_frames": ("knobs", "segment_frames"),
    "stream_prefetch": ("knobs", "stream_prefetch"),
    "vision_features_cache": ("knobs", "vision_features_cache"),
    "object_batch": ("knobs", "object_batch"),
    "prompt": ("scenario", "prompt"),
    "reannotate_every": ("scenario", "reannotate_every"),
}


#: what a run's measures may set (identity columns are the launcher's)
_MEASURE_KEYS = {c.name for c in COLUMNS} - {
    "run_id",
    "config_hash",
    "status",
    "error",
    "scheduler_job",
    "sweep_id",
}


def make_row(
    cfg: RunConfig,
    *,
    run_id: str,
    status: str,
    error: str | None,
    num_frames: int,
    num_objects: int,
    num_cond_frames: int,
    measures: dict[str, Any],
    version: str,
) -> dict[str, Any]:
    """One flat row: every column of ``COLUMNS`` present (null where not measured).

    Raises:
        ValueError: a measure that is not a column (it would be dropped silently otherwise).
    """
    if status not in STATUSES:
        raise ValueError(f"status {status!r} not in {STATUSES}")
    d = cfg.to_dict()
    row: dict[str, Any] = {c.name: None for c in COLUMNS}
    for col, path in _SETTINGS.items():
        if path is not None:
            row[col] = d[path[0]][path[1]]
    row.update(
        run_id=run_id,
        config_hash=config_hash(cfg),
        status=status,
        error=error,
        device=measures.get("device", cfg.device),
        num_frames=num_frames,
        num_objects=num_objects,
        num_cond_frames=num_cond_frames,
        results_version=version,
    )
    unknown = sorted(set(measures) - _MEASURE_KEYS)
    if unknown:  # a figure nobody declared would vanish from the table: refuse it
        raise ValueError(f"make_row: measures not in COLUMNS: {', '.join(unknown)}")
    row.update(measures)
    return row

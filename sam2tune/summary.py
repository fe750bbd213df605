"""Human-readable summary of one run's row (binary units, provenance on every figure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sam2tune.units import fmt_bytes

__all__ = ["print_summary", "format_summary"]


def _num(v: Any, fmt: str = "{:.3f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def _ms(v: Any) -> str:
    return "n/a" if v is None else f"{v * 1e3:.1f} ms"


def _split_line(r: dict[str, Any]) -> list[str]:
    """The steady step's split (one line; none for rows recorded before it existed)."""
    if r.get("encoder_s") is None and r.get("host_s") is None:
        return []
    return [
        f"          a steady frame: encoder {_ms(r.get('encoder_s'))} + tracking "
        f"{_ms(r.get('tracking_s'))} (SAM 2's step), host {_ms(r.get('host_s'))} (sam2tune's "
        "probes and masks, outside fps) [measured, medians]"
    ]


def format_summary(row: dict[str, Any], report_path: Path | None = None) -> str:
    """The run's row as a few labelled lines (and where its record is, when given)."""
    r = row
    random_init = r.get("weights") == "random-init"
    hf = r.get("impl") == "transformers"
    lines = [
        f"sam2tune run {r['run_id']}  status={r['status']}"
        + (f"  error: {r['error']}" if r.get("error") else ""),
        f"  model   {r['model']} @ {r['image_size']} px, weights={r['weights']}"
        + (", impl=transformers (Meta's weights converted)" if hf else "")
        + ("  (random-init: memory and speed are faithful; masks are not)" if random_init else ""),
        f"  video   {r['num_frames']} frames x {r['num_objects']} objects, "
        f"{r['num_cond_frames']} conditioning frames; "
        f"device={r['device']}" + (f" ({r['device_name']})" if r.get("device_name") else ""),
        f"  knobs   offload_video={r['offload_video_to_cpu']} "
        f"offload_state={r['offload_state_to_cpu']}"
        f" max_cond_frames_in_attn={r['max_cond_frames_in_attn']} dtype={r['dtype']}"
        f" predictor={r['predictor']} strategy={r.get('strategy')}"
        + (f" segment_frames={r['segment_frames']}" if r.get("segment_frames") else "")
        + (
            f" vision_features_cache={r['vision_features_cache']}"
            if (r.get("vision_features_cache") or 1) != 1
            else ""
        ),
    ]
    if r.get("cuda_max_allocated_bytes") is not None:
        lines.append(
            f"  GPU     max allocated {fmt_bytes(r['cuda_max_allocated_bytes'])} [measured], "
            f"reserved {fmt_bytes(r['cuda_max_reserved_bytes'])} [measured], NVML process "
            f"{fmt_bytes(r['nvml_peak_process_bytes'])} [measured]"
        )
    lines += [
        f"  memory  est. device peak {fmt_bytes(r.get('est_device_peak_bytes'))} [estimated]"
        f"   host RSS peak {fmt_bytes(r.get('peak_host_rss_bytes'))} [measured]",
        f"          weights {fmt_bytes(r.get('weights_bytes'))}, frames "
        f"{fmt_bytes(r.get('frames_bytes'))}, state {fmt_bytes(r.get('state_bytes'))}, cached "
        f"features {fmt_bytes(r.get('cached_features_bytes'))}, step activations "
        f"{fmt_bytes(r.get('activation_peak_bytes'))} [measured]",
        f"  masks   iou_ref_mean {_num(r.get('iou_ref_mean'))} "
        + (
            "(agreement with Meta's sam2, same weights, no knobs: implementation fidelity)"
            if hf
            else "(agreement with the no-knob reference)"
        )
        + f"   iou_gt_mean {_num(r.get('iou_gt_mean'))}"
        + (
            " (random-init weights: not a quality figure)" if random_init else " (vs ground truth)"
        ),
        f"  speed   {_num(r.get('fps'), '{:.2f}')} fps steady propagation (warm-up "
        f"{_num(r.get('warmup_s'), '{:.2f}')} s apart, spread "
        f"{_num(r.get('fps_spread'), '{:.0%}')}),"
        f" init {_num(r.get('init_s'), '{:.2f}')}"
        f" s, total {_num(r.get('total_s'), '{:.1f}')} s [measured]",
        *_split_line(r),
        "  (sizes in binary units: MiB = 2^20 bytes, GiB = 2^30 bytes)",
    ]
    if report_path is not None:
        lines.append(f"  record  {report_path}")
    return "\n".join(lines)


def print_summary(row: dict[str, Any], report_path: Path | None = None) -> None:
    """Print :func:`format_summary`."""
    print(format_summary(row, report_path), flush=True)

"""CUDA paths: measured allocator / NVML figures beside the CPU-style estimate. Skipped without a GPU."""

import pytest
import torch

from sam2tune.runner.launcher import run_isolated

pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_cuda_run_records_measured_figures_next_to_the_estimate(small):
    r = run_isolated(small("device=cuda", "video.num_frames=16", "model.image_size=512")).row
    assert r["status"] == "ok", r["error"]
    assert r["device"] == "cuda" and r["device_name"]
    for col in ("cuda_max_allocated_bytes", "cuda_max_reserved_bytes", "nvml_peak_device_bytes"):
        assert r[col] and r[col] > r["weights_bytes"]
    assert r["cuda_max_reserved_bytes"] >= r["cuda_max_allocated_bytes"]
    # the device-agnostic estimate is within 2x of what the allocator measured
    ratio = r["est_device_peak_bytes"] / r["cuda_max_allocated_bytes"]
    assert 0.5 < ratio < 2.0, ratio


@needs_cuda
def test_offload_on_cuda_is_lossless_and_moves_measured_bytes(small, tmp_path):
    res = tmp_path / "r"
    a = run_isolated(small("device=cuda", "video.num_frames=16", results=res)).row
    b = run_isolated(
        small("device=cuda", "video.num_frames=16", "knobs.offload_video_to_cpu=true", results=res)
    ).row
    assert b["iou_ref_mean"] == 1.0
    assert a["cuda_max_allocated_bytes"] - b["cuda_max_allocated_bytes"] >= 0.9 * a["frames_bytes"]


@needs_cuda
def test_device_budget_emulates_a_smaller_gpu(small, tmp_path):
    r = run_isolated(small("device=cuda", "limits.device_memory_budget=64MiB")).row
    assert r["status"] == "oom", r["error"]
    ok = run_isolated(small("device=cuda")).row
    assert ok["status"] == "ok"


@needs_cuda
def test_memory_snapshot_is_written_and_linked_from_the_report(small, tmp_path):
    import pickle

    from sam2tune.analysis.report import build_report

    out = run_isolated(small("device=cuda", "probe.memory_snapshot=true", results=tmp_path / "r"))
    r = out.row
    assert r["status"] == "ok", r["error"]
    snap = out.report_path.parent / "memory_snapshot.pickle"
    with open(snap, "rb") as f:
        data = pickle.load(f)
    # PyTorch's recorder: the allocator's segments (with the weights among them) and the trace
    assert data["device_traces"] and data["device_traces"][0]
    held = sum(seg["total_size"] for seg in data["segments"])
    assert held >= r["weights_bytes"]
    allocs = [e for e in data["device_traces"][0] if e["action"] == "alloc"]
    assert max(e["size"] for e in allocs) <= r["cuda_max_allocated_bytes"]
    html_path, md_path = build_report(tmp_path / "r", tmp_path / "rep")
    assert "memory_snapshot.pickle" in md_path.read_text()
    assert "memory_snapshot.pickle" in html_path.read_text()

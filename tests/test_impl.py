"""impl=transformers: the converter gives transformers' Sam2VideoModel Meta's exact weights (same
logits on the same input), knobs map or are refused, and a real run is recorded beside sam2's."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from tests.conftest import sam2tune_cmd

transformers = pytest.importorskip(
    "transformers", reason="impl=transformers needs the [hf] extra (pip install 'sam2tune[hf]')"
)

from sam2tune.adapter.build import build_predictor  # noqa: E402
from sam2tune.adapter.hf import build_hf, convert_state_dict, hf_config  # noqa: E402
from sam2tune.config.presets import model_preset  # noqa: E402
from sam2tune.config.schema import KnobsConfig  # noqa: E402

FRAMES = 5


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    for i in range(FRAMES):
        a = (rng.random((96, 128, 3)) * 60).astype(np.uint8)
        a[20 + 2 * i : 50 + 2 * i, 20 + 3 * i : 60 + 3 * i] = (230, 70, 70)
        a[55:85, 90 - 3 * i : 120 - 3 * i] = (70, 220, 90)
        Image.fromarray(a).save(d / f"{i:05d}.jpg", quality=95)
    return str(d)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sam2.1_tiny", "sam2.1_small", "sam2.1_base_plus"])
def test_converter_fills_every_parameter_of_every_size(name, tmp_path):
    """Every Meta tensor has one place, every transformers tensor is filled, shapes agree, and
    the parameter counts are equal (the configs describe the same architecture)."""
    m = model_preset(name, image_size=256)
    meta = build_predictor(m, KnobsConfig(), torch.device("cpu"), tmp_path).predictor
    hf = transformers.Sam2VideoModel(hf_config(m, KnobsConfig()))
    state = convert_state_dict(meta.state_dict(), hf.state_dict())
    hf.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in hf.parameters()) == sum(p.numel() for p in meta.parameters())
    for k, v in hf.state_dict().items():
        assert torch.equal(v, state[k]), k
    bad = dict(meta.state_dict())
    bad.pop(next(iter(bad)))
    with pytest.raises(ValueError, match="unfilled"):
        convert_state_dict(bad, hf.state_dict())


def _meta_run(pred, frames):
    state = pred.init_state(frames)
    pred.add_new_points_or_box(state, 0, 1, box=np.array([20, 20, 60, 50], np.float32))
    pred.add_new_points_or_box(
        state, 0, 2, points=np.array([[105, 70]], np.float32), labels=np.array([1], np.int32)
    )
    out = {f: m.clone() for f, _ids, m in pred.propagate_in_video(state)}
    return state["images"], out


def _hf_run(built, images, frames_hw):
    """transformers on Meta's own preprocessed frames (so only the models differ)."""
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    p = built.predictor
    sess = Sam2VideoInferenceSession(
        video=images.clone(), video_height=frames_hw[0], video_width=frames_hw[1],
        dtype=torch.float32,
    )
    p.processor.add_inputs_to_inference_session(
        sess, frame_idx=0, obj_ids=1, input_boxes=[[[20.0, 20.0, 60.0, 50.0]]]
    )
    with torch.inference_mode():
        p.model(inference_session=sess, frame_idx=0)
    p.processor.add_inputs_to_inference_session(
        sess, frame_idx=0, obj_ids=2, input_points=[[[[105.0, 70.0]]]], input_labels=[[[1]]]
    )
    with torch.inference_mode():
        p.model(inference_session=sess, frame_idx=0)
    out = {}
    for o in p.model.propagate_in_video_iterator(sess, start_frame_idx=0):
        out[o.frame_idx] = p.processor.post_process_masks(
            [o.pred_masks], original_sizes=[list(frames_hw)], binarize=False
        )[0]
    return out


@pytest.mark.slow
def test_same_weights_same_masks_on_the_same_input(frames, tmp_path):
    """Meta's predictor and transformers' model with converted weights, on the same
    preprocessed frames and prompts: the same masks on every frame and the same logits to
    float32 rounding. Shuffling one converted tensor breaks the agreement (the check
    measures the weights, not the prompts)."""
    m = model_preset("sam2.1_tiny", image_size=256)
    torch.manual_seed(0)
    meta = build_predictor(m, KnobsConfig(), torch.device("cpu"), tmp_path).predictor
    images, ref = _meta_run(meta, frames)
    built = build_hf(m, KnobsConfig(), torch.device("cpu"), tmp_path)
    got = _hf_run(built, images, (96, 128))
    assert sorted(got) == sorted(ref) == list(range(FRAMES))
    for f in ref:
        a, b = ref[f][:, 0] > 0, got[f][:, 0] > 0
        for o in range(2):
            inter = (a[o] & b[o]).sum().item()
            union = (a[o] | b[o]).sum().item()
            assert inter == union, (f, o, inter, union)
        # the same float32 arithmetic up to operation order: 7.5e-7 measured
        assert torch.allclose(ref[f], got[f].to(ref[f].dtype), atol=1e-4, rtol=0), f
    # control: one tensor wrongly placed (the patch embedding's output channels permuted)
    w = built.predictor.model.vision_encoder.backbone.patch_embed.projection.weight
    with torch.no_grad():
        w.copy_(w[torch.randperm(w.shape[0], generator=torch.Generator().manual_seed(0))])
    bad = _hf_run(built, images, (96, 128))
    assert any(not torch.allclose(ref[f], bad[f], atol=1e-2) for f in range(FRAMES))


def test_knobs_map_or_are_refused(small):
    """Each knob transformers lacks is refused in one line naming it; sam2 refuses
    transformers' cache size; the mapped knobs reach transformers' own arguments."""
    refused = {
        "knobs.strategy=stream": "knobs.strategy=stream",
        "knobs.predictor=legacy_batched": "knobs.predictor=legacy_batched",
        "knobs.segment_frames=4": "knobs.segment_frames=4",
        "knobs.async_loading_frames=true": "knobs.async_loading_frames=true",
        "model=sam2_tiny": "model=sam2_tiny",
    }
    for ov, name in refused.items():
        with pytest.raises(Exception) as e:
            small("impl=transformers", ov)
        line = str(e.value.__cause__ or e.value).splitlines()[0]
        assert line.startswith(name) and "impl=transformers" in line, line
    with pytest.raises(Exception, match="knobs.vision_features_cache=3: impl=sam2"):
        small("knobs.vision_features_cache=3")
    cfg = small(
        "impl=transformers", "knobs.offload_video_to_cpu=true", "knobs.offload_state_to_cpu=true",
        "knobs.max_cond_frames_in_attn=2", "knobs.vision_features_cache=3",
    )
    from sam2tune.adapter.hf import hf_settings

    assert hf_settings(cfg.knobs) == [
        "Sam2VideoConfig.max_cond_frame_num=2",
        'video_storage_device="cpu"',
        'inference_state_device="cpu"',
        "max_vision_features_cache_size=3",
    ]
    assert hf_config(cfg.model, cfg.knobs).max_cond_frame_num == 2


def test_config_hash_of_sam2_runs_is_unchanged(small):
    """Adding impl= did not change the hash of existing sam2 runs (resume keeps working);
    impl=transformers is another point."""
    from sam2tune.config.schema import config_hash

    a, b = small(), small("impl=transformers")
    d = a.to_dict()
    d.pop("impl")
    d["knobs"].pop("vision_features_cache")
    d["knobs"].pop("object_batch")  # its default, like vision_features_cache: not in the hash
    assert config_hash(a) != config_hash(b)
    import hashlib

    for k in ("results_dir", "cache_dir", "force"):
        d.pop(k)
    d["limits"].pop("timeout_s")
    d["probe"].pop("memory_snapshot")
    d["knobs"].pop("stream_prefetch")
    assert config_hash(a) == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.slow
def test_transformers_run_recorded_beside_sam2(cache_root, tmp_path):
    """The same workload through both implementations, through the CLI: two ok rows, memory by
    role for each, the transformers row's agreement with Meta's sam2 recorded, and the census
    following transformers' placement (offloaded state leaves the device figure)."""
    import sam2tune

    res = tmp_path / "r"
    base = sam2tune_cmd() + [
        "run", "device=cpu", "model.image_size=256", "video.num_frames=4", "video.height=96",
        "video.width=128", f"cache_dir={cache_root}", f"results_dir={res}",
    ]
    for extra in (["impl=sam2"], ["impl=transformers"],
                  ["impl=transformers", "knobs.offload_state_to_cpu=true"]):
        p = subprocess.run(base + extra, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
    df = sam2tune.load_results(res).sort_values("run_id")
    assert list(df.impl) == ["sam2", "transformers", "transformers"]
    assert (df.status == "ok").all()
    for col in ("est_device_peak_bytes", "peak_host_rss_bytes", "weights_bytes", "fps",
                "frames_bytes", "state_bytes", "cached_features_bytes"):
        assert (df[col] > 0).all(), col
    sam2, hf, hf_off = (df.iloc[i] for i in range(3))
    assert sam2.weights == hf.weights == "random-init"
    # same parameters and dtype; transformers keeps a few KiB more buffers (its second copy of
    # the random Fourier features)
    assert abs(hf.weights_bytes - sam2.weights_bytes) < 1e-3 * sam2.weights_bytes
    assert hf.iou_ref_mean > 0.9 and hf.jf_ref_mean > 0.9  # agreement with Meta's sam2
    assert hf_off.est_device_peak_bytes < hf.est_device_peak_bytes
    # the memory model's transformers terms against the census of these real sessions: the
    # frames and the state are exact from transformers' code (the prompts' inputs aside)
    from sam2tune.memory_model.calibrate import run_inputs
    from sam2tune.memory_model.memory import MemoryModel, _arch, _resident, predict

    checked = 0
    for r in run_inputs(res):
        c, w = r.candidate, r.workload
        row = df[df.run_id == r.run_id].iloc[0]
        assert c.impl == row.impl
        if c.impl != "transformers":
            continue
        rs = _resident(w, c, w.image_size, _arch(w.model))
        assert rs.frames == row.frames_bytes
        assert 0 <= row.state_bytes - rs.state <= 256, (rs.state, row.state_bytes)
        p = predict(w, c, MemoryModel.load(), "cpu", host_baseline=0)
        if not c.offload_state_to_cpu:
            assert p.terms["cached_features"] == row.cached_features_bytes
        checked += 1
    assert checked == 2
    rep = json.loads(next((res / "runs" / hf.run_id).glob("report.json")).read_text())
    assert rep["impl"] == "transformers"
    assert rep["environment"]["transformers_version"] == transformers.__version__
    assert rep["reference"]["is_reference"] is False


def test_recommendations_know_the_implementation():
    """transformers candidates only with the knobs it maps; its state costs more per
    object-frame (high-res logits kept); a transformers-only answer gives transformers' own
    snippet; a SAM 2 (not 2.1) workload has no transformers candidate; a model fitted without
    transformers runs says so in its trust note."""
    from sam2tune.memory_model.memory import Candidate, MemoryModel, Workload, predict
    from sam2tune.tune.recommend import recommend, snippet
    from sam2tune.tune.space import candidates

    w = Workload("sam2.1_tiny", 1024, 1800, 2, 1, None, 155_851_016)
    hf = candidates(w, "cuda", ("transformers",))
    assert hf and all(c.impl == "transformers" and c.strategy == "stock" for c in hf)
    assert {c.offload_state_to_cpu for c in hf} == {False, True}
    assert not candidates(Workload("sam2_tiny", 1024, 1800, 2), "cuda", ("transformers",))
    m = MemoryModel.load()
    a = predict(w, Candidate(), m, "cuda", host_baseline=0)
    b = predict(w, Candidate(impl="transformers"), m, "cuda", host_baseline=0)
    per_obj_frame = (b.terms["state"] - a.terms["state"]) / (2 * 1800)
    assert per_obj_frame > 1024 * 1024 * 4 * 0.99  # the 1024 x 1024 float32 logits, at least
    assert "impl transformers" in b.trust["statement"] or "impl" in b.trust["axes"]
    best, _ = recommend(w, 80 * 2**30, 512 * 2**30, m, "cuda", None, ("transformers",))
    assert best is not None and best.candidate.impl == "transformers"
    text = snippet(w, best.candidate, "x.pt")
    assert 'impl="transformers"' in text and "impl=transformers" in text
    if best.candidate.offload_state_to_cpu:
        assert 'inference_state_device="cpu"' in text and "offload_state_to_cpu=True" in text
    both, _ = recommend(w, 80 * 2**30, 512 * 2**30, m, "cuda", None)
    assert both is not None and both.candidate.impl == "sam2"  # lossless sam2 fits: exact wins


def test_impl_choice_is_validated_in_one_line(tmp_path):
    p = subprocess.run(
        sam2tune_cmd() + ["recommend", "budget=24GiB", "impl=tensorflow",
                          f"results_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )
    assert p.returncode != 0
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "impl" in err[0] and "tensorflow" in err[0], p.stderr
    p = subprocess.run(
        sam2tune_cmd() + ["run", "impl=tensorflow", f"results_dir={tmp_path / 'r'}"],
        capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 2 and not (tmp_path / "r").exists()
    assert p.stderr.strip() == (
        "sam2tune: error: impl: unknown impl 'tensorflow' (choose from sam2, transformers)"
    )


@pytest.mark.slow
def test_sam3_tracker_runs_through_the_same_session(frames):
    """SAM 3's tracker (transformers' Sam3TrackerVideoModel, random-init) through sam2tune's
    transformers session at 336 px: prompts, propagation, masks at the video's size and the
    census by role (about 40 s on this 2-core CPU; 36 s per frame at its own 1008 px)."""
    from sam2tune.adapter.hf import HFSession, build_sam3_tracker
    from sam2tune.adapter.session import FrameStep
    from sam2tune.scenario import Prompt

    pred = build_sam3_tracker(336, torch.device("cpu"))
    assert sum(p.numel() for p in pred.model.parameters()) > 400_000_000
    sess = HFSession(pred, frames, KnobsConfig())
    sess.init()
    got = [
        ev for ev in sess.track(
            [Prompt(kind="box", frame=0, obj_id=1, box=[20.0, 20.0, 60.0, 50.0])]
        )
        if isinstance(ev, FrameStep)
    ]
    assert [e.frame_idx for e in got] == list(range(FRAMES))
    assert all(e.masks.shape == (1, 96, 128) and e.obj_ids == [1] for e in got)
    c = sess.census()
    assert c.frames_bytes == FRAMES * 3 * 336 * 336 * 4
    assert c.state_bytes > FRAMES * 336 * 336 * 4  # high-res logits kept per frame, as SAM 2.1
    assert c.cached_features_bytes > 0 and c.maskmem_entries >= FRAMES
    sess.close()


def test_only_the_transformers_adapter_imports_transformers():
    """One adapter per implementation: transformers' classes are touched in adapter/hf.py only
    (the sam2 package in adapter/ only, as before)."""
    import re
    from pathlib import Path

    import sam2tune as pkg

    root = Path(pkg.__file__).parent
    users = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if re.search(r"^\s*(from|import) transformers\b", p.read_text(), re.M)
    )
    assert users == ["adapter/hf.py"]


def test_the_weights_term_is_what_transformers_builds_in_each_dtype():
    """transformers with dtype=bfloat16 casts the model (its weights 2 bytes each); Meta's sam2
    autocasts and keeps float32 weights: the memory model's weights term is the built model's
    parameter and buffer bytes (the oracle: the torch modules themselves)."""
    import sam2tune
    from sam2tune.memory_model.memory import Candidate, MemoryModel, Workload, predict

    model = MemoryModel.load()
    w = Workload("sam2.1_tiny", 256, 8, 1, 1,
                 weights_bytes=model_preset("sam2.1_tiny").weights_bytes)
    for impl, dtype in (("transformers", "bfloat16"), ("transformers", "float32")):
        pred = sam2tune.build_predictor("sam2.1_tiny", None, "cpu", image_size=256, impl=impl,
                                        dtype=dtype)
        mod = pred if isinstance(pred, torch.nn.Module) else pred.model
        built = sum(t.numel() * t.element_size()
                    for t in [*mod.parameters(), *mod.buffers()])
        term = predict(w, Candidate(impl=impl, dtype=dtype), model, "cpu").terms["weights"]
        assert abs(term - built) / built < 0.02, (impl, dtype, term, built)

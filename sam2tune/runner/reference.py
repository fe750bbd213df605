"""The reference run and its cache: the masks every memory-knob-off run of the same video,
prompts, model, weights and resolution produces, computed once per results dir and compared with
each run's masks (agreement = mean IoU per object)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sam2tune.adapter.build import BuiltPredictor, build_predictor, needs_own_predictor
from sam2tune.config.schema import KnobsConfig, RunConfig
from sam2tune.metrics import JF, MaskDir, MaskSet, agreement, jf_agreement
from sam2tune.paths import atomic_write
from sam2tune.runner.limits import lift_limits
from sam2tune.runner.propagate import propagate
from sam2tune.scenario import Prompt
from sam2tune.video.sources import VideoData

__all__ = [
    "compare_with_reference",
    "is_own_reference",
    "reference_image_size",
    "reference_key",
    "save_masks",
]


def reference_image_size(cfg: RunConfig) -> int:
    """The reference's resolution: ``probe.reference_image_size``, else the run's own."""
    return cfg.probe.reference_image_size or cfg.model.image_size


def is_own_reference(cfg: RunConfig) -> bool:
    """Every memory knob off, at the reference's resolution: the run is its own reference."""
    return (
        not cfg.knobs.memory_saving()
        and reference_image_size(cfg) == cfg.model.image_size
        and cfg.impl.name == "sam2"  # the reference runs Meta's sam2 (agreement = fidelity)
    )


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


def save_masks(ms: MaskSet, path: Path, key: str = "") -> None:
    """Write ``ms`` atomically (temporary file + rename): a reader never sees half a file."""
    atomic_write(path, lambda tmp: ms.save(tmp, key), suffix=".npz")


def _compute_reference(
    cfg: RunConfig,
    video: VideoData,
    prompts: list[Prompt],
    built: BuiltPredictor,
    cache_root: Path,
    dev: torch.device,
) -> MaskSet:
    """The reference masks: every memory knob off, at the reference's resolution, outside the
    run's budgets; the run's predictor is reused unless the reference needs its own."""
    lift_limits(dev)
    ref_knobs = KnobsConfig()
    rb = built
    ref_model = dataclasses.replace(cfg.model, image_size=reference_image_size(cfg))
    if needs_own_predictor(cfg.model, cfg.knobs, ref_model, ref_knobs, cfg.impl.name):
        del built.predictor
        rb = build_predictor(ref_model, ref_knobs, dev, cache_root)
    masks = propagate(rb.predictor, video, prompts, ref_knobs, dev, probes=False).masks
    assert isinstance(masks, MaskSet)  # the reference runs stock knobs: masks in memory
    return masks


def compare_with_reference(
    cfg: RunConfig,
    video: VideoData,
    prompts: list[Prompt],
    built: BuiltPredictor,
    masks: MaskSet | MaskDir,
    refs_dir: Path,
    cache_root: Path,
    dev: torch.device,
) -> tuple[dict[int, float], dict[str, Any]]:
    """Agreement per object with the reference masks (loaded from ``refs_dir`` by their key, or
    computed with every memory knob off and cached there), and what happened (``ref_info``).
    A damaged or mismatched cache file is recomputed and said so; the reference failing never
    fails the measured run (the error is recorded instead). ``ref_info["jf"]`` holds J and F
    against the reference (:class:`sam2tune.metrics.JF`) when it was compared."""
    ref_info: dict[str, Any] = {
        "is_reference": is_own_reference(cfg),
        "image_size": reference_image_size(cfg),
    }
    per_obj_ref: dict[int, float] = {}
    if cfg.probe.reference:
        key = reference_key(cfg, video, built.weights, prompts)
        path = refs_dir / f"{key}.npz"
        ref_info.update(key=key, cached=path.is_file())
        if is_own_reference(cfg):  # stock knobs: masks held in memory, not streamed to disk
            assert isinstance(masks, MaskSet)
            per_obj_ref = {i: 1.0 for i in masks.obj_ids}
            ones = dict.fromkeys(masks.frames, 1.0)
            ref_info["jf"] = JF(dict(per_obj_ref), dict(per_obj_ref), ones)
            save_masks(masks, path, key)
        else:
            try:
                ref: MaskSet | None = None
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
                    t_ref = time.perf_counter()
                    ref = _compute_reference(cfg, video, prompts, built, cache_root, dev)
                    save_masks(ref, path, key)
                    ref_info["computed_s"] = time.perf_counter() - t_ref
                frames = sorted(set(ref.frames) | set(masks.frames))
                per_obj_ref = agreement(masks, ref, frames)
                ref_info["jf"] = jf_agreement(masks, ref, frames)
            except Exception as e:  # the reference failing must not fail the measured run
                ref_info["error"] = f"{type(e).__name__}: {e}"
    return per_obj_ref, ref_info

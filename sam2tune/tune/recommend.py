"""``sam2tune recommend`` and the per-GPU lookup table."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from sam2tune.config.store import CONF_DIR
from sam2tune.errors import InputError
from sam2tune.memory_model.memory import Candidate, MemoryModel, Workload
from sam2tune.tune.tuner import Choice, choose, screen
from sam2tune.units import GiB, fmt_bytes, gb_to_bytes, parse_bytes

__all__ = ["catalog", "resolve_budget", "recommend", "snippet", "lookup_table", "CLASSES"]

#: workload classes of the lookup table: 30 fps video lengths x objects x input resolution
CLASSES: dict[str, Any] = {
    "frames": {"10 s": 300, "1 min": 1800, "2 min": 3600, "10 min": 18000},
    "objects": [1, 3, 10],
    "image_size": [512, 1024],
    "prompt_every": [0, 30],  # 0: each object prompted once; 30: re-prompted every 30 frames
}


def catalog() -> dict[str, int]:
    """GPU name -> memory in bytes (vendor GB converted once, in gb_to_bytes)."""
    raw = yaml.safe_load((CONF_DIR / "gpus.yaml").read_text())
    return {str(k): gb_to_bytes(float(v)) for k, v in raw.items()}


def detect_gpu() -> tuple[str, int]:
    """The local GPU through NVML (name, total bytes)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(h)
        name = name.decode() if isinstance(name, bytes) else name
        return str(name), int(pynvml.nvmlDeviceGetMemoryInfo(h).total)
    except Exception as e:
        raise InputError(
            f"budget: no budget or gpu given and no GPU detected through NVML ({e}); "
            'pass budget=24GiB or gpu="RTX 4090"'
        ) from None


def resolve_budget(budget: str | None, gpu: str | None) -> tuple[int, str]:
    """Bytes and a description: an explicit budget, a catalog GPU, or the local GPU."""
    if budget is not None:
        try:
            b = parse_bytes(budget, name="budget")
        except ValueError as e:
            raise InputError(str(e)) from None
        if b is None:
            raise InputError("budget: give a size such as 24GiB")
        return b, f"budget {fmt_bytes(b)}"
    if gpu is not None:
        cat = catalog()
        match = {k.lower(): k for k in cat}.get(gpu.strip().lower())
        if match is None:
            raise InputError(
                f"gpu: {gpu!r} is not in the catalog conf/gpus.yaml ({', '.join(cat)})"
            )
        return cat[match], f"{match} ({cat[match] / 1e9:g} GB = {fmt_bytes(cat[match])})"
    name, total = detect_gpu()
    return total, f"{name} (detected, {fmt_bytes(total)})"


#: defaults until a GPU run is recorded (then `sam2tune fit` stores measured values): the CUDA
#: context PyTorch creates (CUDA 12/13 with lazy module loading: a few hundred MiB on recent
#: GPUs; assumed, not measured by this project) and the caching allocator's headroom, reserved
#: over allocated (fragmentation; assumed 10 %).
CUDA_CONTEXT_DEFAULT = 512 * 2**20
RESERVED_OVER_ALLOCATED_DEFAULT = 1.10


def usable_memory(total: int, model: MemoryModel) -> tuple[int, str]:
    """A GPU's memory for SAM 2's tensors: total - CUDA context, divided by the allocator's
    reserved/allocated ratio. Measured values come from the model's CUDA calibration."""
    cal = model.calibration.get("cuda", {})
    ctx = cal.get("cuda_context_bytes")
    ratio = cal.get("cuda_reserved_over_allocated")
    ctx_src = "measured on CUDA runs" if ctx else "assumed: no CUDA run recorded yet"
    ratio_src = "measured on CUDA runs" if ratio else "assumed"
    ctx = int(ctx or CUDA_CONTEXT_DEFAULT)
    ratio = float(ratio or RESERVED_OVER_ALLOCATED_DEFAULT)
    usable = max(0, int((total - ctx) / ratio))
    return usable, (
        f"usable {fmt_bytes(usable)} = ({fmt_bytes(total)} - CUDA context {fmt_bytes(ctx)} "
        f"[{ctx_src}]) / allocator reserved:allocated {ratio:.2f} [{ratio_src}]"
    )


#: transformers' hub ids of Meta's SAM 2.1 checkpoints, by sam2tune model preset
HF_IDS = {
    "sam2.1_tiny": "facebook/sam2.1-hiera-tiny",
    "sam2.1_small": "facebook/sam2.1-hiera-small",
    "sam2.1_base_plus": "facebook/sam2.1-hiera-base-plus",
    "sam2.1_large": "facebook/sam2.1-hiera-large",
}


def snippet_hf(w: Workload, c: Candidate) -> str:
    """Ready-to-paste transformers calls (``Sam2VideoModel`` / ``Sam2VideoProcessor``) for a
    transformers candidate, and the equivalent sam2tune overrides."""
    size = c.image_size or w.image_size
    cfg_kw = (
        f", max_cond_frame_num={c.max_cond_frames_in_attn}"
        if c.max_cond_frames_in_attn != -1
        else ""
    )
    dt = "torch.bfloat16" if c.dtype == "bfloat16" else "torch.float32"
    from sam2tune.adapter.hf import hf_session_args

    session = ["video=frames", 'inference_device="cuda"', *hf_session_args(c), f"dtype={dt}"]
    hub = HF_IDS.get(w.model, "facebook/sam2.1-hiera-<size>")
    lines = [
        "# transformers (Python)",
        "import torch",
        "from transformers import Sam2VideoModel, Sam2VideoProcessor",
        f'model = Sam2VideoModel.from_pretrained("{hub}"{cfg_kw})'
        f'.to("cuda", dtype={dt})',
        f'processor = Sam2VideoProcessor.from_pretrained("{hub}")',
        None
        if size == 1024
        else f"# image_size {size}: the hub config is 1024; sam2tune.adapter.hf.hf_config builds "
        f"the config at {size} (image, prompt-encoder and memory-attention sizes together)",
        "session = processor.init_video_session(" + ", ".join(session) + ")",
        "processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1,",
        "                                          input_boxes=[[[x0, y0, x1, y1]]])",
        "model(inference_session=session, frame_idx=0)",
        "for out in model.propagate_in_video_iterator(session):",
        "    masks = processor.post_process_masks(",
        "        [out.pred_masks],",
        "        original_sizes=[[session.video_height, session.video_width]])[0]",
        "",
        "# the same with sam2tune",
        "sam2tune run " + " ".join(c.overrides(w)),
    ]
    return "\n".join(x for x in lines if x is not None)


def snippet(w: Workload, c: Candidate, config_file: str, checkpoint_name: str) -> str:
    """Ready-to-paste calls of the candidate's implementation (SAM 2's, or transformers') and
    the equivalent sam2tune overrides."""
    if c.impl == "transformers":
        return snippet_hf(w, c)
    extra = [f"++model.image_size={c.image_size or w.image_size}"]
    if c.max_cond_frames_in_attn != -1:
        extra.append(f"++model.max_cond_frames_in_attn={c.max_cond_frames_in_attn}")
    target = (
        "from sam2.sam2_video_predictor_legacy import SAM2VideoPredictor  # batched objects\n"
        if c.predictor == "legacy_batched"
        else ""
    )
    lines = [
        "# SAM 2 (Python)",
        "import torch",
        "from sam2.build_sam import build_sam2_video_predictor",
        target.rstrip("\n") if target else None,
        f'predictor = build_sam2_video_predictor("{config_file}", '
        f'"checkpoints/{checkpoint_name}",',
        f"                                       hydra_overrides_extra={extra!r})",
        "state = predictor.init_state(video_path,",
        f"                             offload_video_to_cpu={c.offload_video_to_cpu},",
        f"                             offload_state_to_cpu={c.offload_state_to_cpu})",
    ]
    if c.dtype == "bfloat16":
        lines.append(
            'with torch.autocast("cuda", dtype=torch.bfloat16):  # around prompts and propagation'
        )
    if c.strategy != "stock" or c.segment_frames:
        lines += [
            f"# knobs.strategy={c.strategy}, knobs.segment_frames={c.segment_frames} are "
            "sam2tune's bounded-memory modes (not SAM 2 options): run SAM 2's loop through "
            "sam2tune's public API (same mask logits as propagate_in_video)",
            "import sam2tune",
            "prompts = [dict(frame_idx=0, obj_id=1, box=[x0, y0, x1, y1])]  # SAM 2's arguments",
            "for frame_idx, obj_ids, mask_logits in sam2tune.propagate(",
            f"        predictor, video_path, prompts, strategy={c.strategy!r}, "
            f"segment_frames={c.segment_frames}):",
            "    masks = (mask_logits > 0.0).cpu().numpy()",
        ]
    lines += ["", "# the same with sam2tune", "sam2tune run " + " ".join(c.overrides(w))]
    return "\n".join(x for x in lines if x is not None)


def recommend(
    w: Workload,
    budget: int,
    host_budget: int,
    model: MemoryModel,
    device_kind: str = "cuda",
    data=None,
    impls: tuple[str, ...] = ("sam2", "transformers"),
) -> tuple[Choice | None, list[Choice]]:
    """The best feasible configuration (model-screened over the whole knob space of each
    implementation in ``impls``; ``data``: recorded runs scoring quality and speed, as ``tune``
    uses them)."""
    choices = screen(w, budget, host_budget, model, device_kind, data, impls)
    return choose(choices), choices


def nothing_fits(
    w: Workload,
    budget: int,
    host: int,
    choices: list[Choice],
    model: MemoryModel | None = None,
    device_kind: str = "cuda",
) -> str:
    """What is missing and the smallest change that would fit (GPUs compared by their usable
    memory when ``model`` is given on CUDA)."""
    def usable(b: int) -> int:
        return usable_memory(b, model)[0] if model is not None and device_kind == "cuda" else b

    def cfg(c: Choice) -> str:
        return " ".join(c.candidate.overrides(w)[1:]) or "stock"

    dev_ok = [c for c in choices if c.prediction["device_peak_bytes"] <= budget]
    if dev_ok:  # the accelerator has room: the host budget is what binds
        hb = min(dev_ok, key=lambda c: c.prediction["host_peak_bytes"])
        need = hb.prediction["host_peak_bytes"]
        return (
            f"nothing fits the host budget: configurations fit the accelerator budget "
            f"{fmt_bytes(budget)}, but the smallest predicted host peak among them is "
            f"{fmt_bytes(need)} ({cfg(hb)}), {fmt_bytes(need - host)} more than the host budget "
            f"{fmt_bytes(host)}. Smallest change: {fmt_bytes(need)} of host RAM "
            f"(host_budget=), or a shorter video."
        )
    best_dev = min(choices, key=lambda c: c.prediction["device_peak_bytes"])
    need = best_dev.prediction["device_peak_bytes"]
    msg = [
        f"nothing fits the accelerator budget: the smallest predicted accelerator peak is "
        f"{fmt_bytes(need)} ({cfg(best_dev)}), {fmt_bytes(need - budget)} more than the budget "
        f"{fmt_bytes(budget)}."
    ]
    fits_gpu = sorted((b, n) for n, b in catalog().items() if usable(b) >= need)
    if fits_gpu:
        msg.append(f"Smallest change: a GPU with more memory (e.g. {fits_gpu[0][1]}).")
    if best_dev.prediction["host_peak_bytes"] > host:
        msg.append(
            "That configuration would also need "
            f"{fmt_bytes(best_dev.prediction['host_peak_bytes'])}"
            f" of host RAM (host budget {fmt_bytes(host)})."
        )
    return " ".join(msg)


def lookup_table(
    model: MemoryModel,
    model_name: str,
    weights_bytes: int,
    host_budget: int,
    device_kind: str = "cuda",
    data=None,
    impls: tuple[str, ...] = ("sam2", "transformers"),
) -> list[dict[str, Any]]:
    """Recommended config per catalog GPU x workload class (predicted by the model), over the
    implementations in ``impls``, and the best with transformers alone beside it."""
    from itertools import product

    from sam2tune.config.presets import model_preset

    preset = model_preset(model_name)
    rows = []
    cal = model.kind(device_kind)[1]
    for gpu, total in catalog().items():
        budget = usable_memory(total, model)[0] if device_kind == "cuda" else total
        for (length, n), k, s, pe in product(
            CLASSES["frames"].items(),
            CLASSES["objects"],
            CLASSES["image_size"],
            CLASSES["prompt_every"],
        ):
            w = Workload(model_name, s, n, k, 1, None, weights_bytes, prompt_every=pe)
            best, _ = recommend(w, budget, host_budget, model, device_kind, data, impls)
            row = {
                "gpu": gpu,
                "gpu_bytes": total,
                "usable_bytes": budget,
                "video": length,
                "num_frames": n,
                "num_objects": k,
                "image_size": s,
                "prompt_every": pe,
                "model": model_name,
                "config": "nothing fits",
                "predicted_device_peak_bytes": None,
                "predicted_host_peak_bytes": None,
                "margin_bytes": None,
                "quality": None,
                "trust": None,
                "snippet": None,
                "figure": f"predicted (memory model calibrated on {cal})",
                "candidate": None,
                "transformers_config": "nothing fits",
                "transformers_predicted_device_peak_bytes": None,
                "transformers_candidate": None,
            }
            hf, _ = recommend(w, budget, host_budget, model, device_kind, data, ("transformers",))
            if hf is not None:
                row.update(
                    transformers_config=" ".join(hf.candidate.overrides(w)[1:]),
                    transformers_predicted_device_peak_bytes=hf.prediction["device_peak_bytes"],
                    transformers_candidate=asdict(hf.candidate),
                )
            if best is not None:
                p = best.prediction
                row.update(
                    config=" ".join(best.candidate.overrides(w)[1:]),
                    predicted_device_peak_bytes=p["device_peak_bytes"],
                    predicted_host_peak_bytes=p["host_peak_bytes"],
                    margin_bytes=budget - p["device_peak_bytes"],
                    quality=best.quality,
                    trust=p["trust"]["statement"],
                    snippet=snippet(w, best.candidate, preset.config_file, preset.checkpoint_name),
                    candidate=asdict(best.candidate),
                )
            rows.append(row)
    return rows


def write_lookup(rows: list[dict[str, Any]], out: Path, host_budget: int) -> tuple[Path, Path]:
    """Write the lookup table as CSV, Markdown and JSON under ``out``."""
    import pandas as pd

    from sam2tune.paths import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "gpu_lookup.json", {"host_budget_bytes": host_budget, "rows": rows})
    df = pd.DataFrame(rows).drop(
        columns=["candidate", "snippet", "transformers_candidate"], errors="ignore"
    )
    df.to_csv(out / "gpu_lookup.csv", index=False)
    md = [
        "# Per-GPU lookup: recommended SAM 2 configuration",
        "",
        f"Model {rows[0]['model']}; host RAM budget {fmt_bytes(host_budget)}; each object "
        "prompted once (prompt every 0) or every 30 frames; "
        f"{rows[0]['figure']}. Peaks in GiB (2^30 bytes). Each GPU is budgeted at its usable "
        "memory: total minus the CUDA context, over the allocator's reserved:allocated ratio "
        "(`usable_bytes` in the CSV/JSON).",
        "",
        "| GPU | video | objects | px | prompt every | config | device peak GiB | host peak GiB "
        "| best with transformers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["predicted_device_peak_bytes"]
        h = r["predicted_host_peak_bytes"]
        md.append(
            f"| {r['gpu']} | {r['video']} | {r['num_objects']} | {r['image_size']} | "
            f"{r['prompt_every'] or 'once'} | "
            f"{r['config'] or 'stock'} | {'' if d is None else f'{d / GiB:.2f}'} | "
            f"{'' if h is None else f'{h / GiB:.2f}'} | {r.get('transformers_config') or ''} |"
        )
    atomic_write_text(out / "gpu_lookup.md", "\n".join(md) + "\n")
    from sam2tune.tune.lookup_page import write_page

    write_page(rows, out / "index.html", host_budget)
    return out / "gpu_lookup.csv", out / "gpu_lookup.md"


def from_lookup(
    path: Path, gpu: str | None, w: Workload, host_budget: int
) -> dict[str, Any] | None:
    """The lookup table's row for this GPU and workload class, if it has one."""
    if gpu is None or not path.is_file():
        return None
    d = json.loads(path.read_text())
    if d.get("host_budget_bytes") != host_budget:
        return None
    for r in d["rows"]:
        if (
            r["gpu"].lower() == gpu.lower()
            and r["num_frames"] == w.num_frames
            and r["num_objects"] == w.num_objects
            and r["image_size"] == w.image_size
            and r["model"] == w.model
            and r.get("prompt_every", 0) == w.prompt_every
            and (w.prompt_every or w.num_cond_frames == 1)
            and r["candidate"]
        ):
            return r
    return None

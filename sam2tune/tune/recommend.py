"""``sam2tune recommend`` and the per-GPU lookup table."""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sam2tune.errors import InputError
from sam2tune.gpus import catalog, resolve_budget, usable_memory
from sam2tune.memory_model.memory import MemoryModel, Workload
from sam2tune.speed_model.model import SpeedModel, load_speed_model
from sam2tune.tune.snippet import snippet
from sam2tune.tune.space import answer_speed
from sam2tune.tune.tuner import Choice, choose, screen
from sam2tune.units import GiB, fmt_bytes

__all__ = [
    "catalog",
    "resolve_budget",
    "usable_memory",
    "recommend",
    "snippet",
    "lookup_table",
    "CLASSES",
]

#: workload classes of the lookup table: 30 fps video lengths x objects x input resolution
CLASSES: dict[str, Any] = {
    "frames": {"10 s": 300, "1 min": 1800, "2 min": 3600, "10 min": 18000},
    "objects": [1, 3, 10],
    "image_size": [512, 1024],
    "prompt_every": [0, 30],  # 0: each object prompted once; 30: re-prompted every 30 frames
}


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
        return usable_memory(b, model, device_kind)[0] if model is not None else b

    def cfg(c: Choice) -> str:
        return " ".join(c.candidate.overrides(w)[1:]) or "stock"

    dev_ok = [c for c in choices if c.prediction.device_peak_bytes <= budget]
    if dev_ok:  # the accelerator has room: the host budget is what binds
        hb = min(dev_ok, key=lambda c: c.prediction.host_peak_bytes)
        need = hb.prediction.host_peak_bytes
        return (
            f"nothing fits the host budget: configurations fit the accelerator budget "
            f"{fmt_bytes(budget)}, but the smallest predicted host peak among them is "
            f"{fmt_bytes(need)} ({cfg(hb)}), {fmt_bytes(need - host)} more than the host budget "
            f"{fmt_bytes(host)}. Smallest change: {fmt_bytes(need)} of host RAM "
            f"(host_budget=), or a shorter video."
        )
    best_dev = min(choices, key=lambda c: c.prediction.device_peak_bytes)
    need = best_dev.prediction.device_peak_bytes
    msg = [
        f"nothing fits the accelerator budget: the smallest predicted accelerator peak is "
        f"{fmt_bytes(need)} ({cfg(best_dev)}), {fmt_bytes(need - budget)} more than the budget "
        f"{fmt_bytes(budget)}."
    ]
    fits_gpu = sorted((b, n) for n, b in catalog().items() if usable(b) >= need)
    if fits_gpu:
        msg.append(f"Smallest change: a GPU with more memory (e.g. {fits_gpu[0][1]}).")
    if best_dev.prediction.host_peak_bytes > host:
        msg.append(
            "That configuration would also need "
            f"{fmt_bytes(best_dev.prediction.host_peak_bytes)}"
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
    screens: dict[tuple[int, ...], list[Choice]] = {}  # per workload: predictions do not
    every = tuple(sorted(set(impls) | {"transformers"}))  # depend on the GPU's budget
    for gpu, total in catalog().items():
        budget = usable_memory(total, model, device_kind)[0]
        for (length, n), k, s, pe in product(
            CLASSES["frames"].items(),
            CLASSES["objects"],
            CLASSES["image_size"],
            CLASSES["prompt_every"],
        ):
            w = Workload(model_name, s, n, k, 1, None, weights_bytes, prompt_every=pe)
            if (n, k, s, pe) not in screens:
                screens[(n, k, s, pe)] = screen(
                    w, 2**62, host_budget, model, device_kind, data, every
                )
            fit = _within(screens[(n, k, s, pe)], budget, host_budget)
            best = choose([c for c in fit if c.candidate.impl in impls])
            row = _empty_row(gpu, total, budget, length, n, k, s, pe, model_name, cal)
            hf = choose([c for c in fit if c.candidate.impl == "transformers"])
            row.update(_answer_cells(w, budget, best, hf, preset.checkpoint_name, device_kind,
                                     gpu))
            rows.append(row)
    return rows


def _empty_row(
    gpu: str, total: int, budget: int, length: str, n: int, k: int, s: int, pe: int,
    model_name: str, cal: str,
) -> dict[str, Any]:
    """A lookup cell before its answer (every column, "nothing fits" until one does)."""
    return {
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
        "predicted_fps": None,
        "predicted_end_to_end_s": None,
        "speed_provenance": None,
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


@functools.cache
def _speed_model() -> SpeedModel:
    """The shipped speed model, read once (the lookup asks for it in every cell)."""
    return load_speed_model()


def _within(choices: list[Choice], budget: int, host_budget: int) -> list[Choice]:
    """The screened choices judged against one GPU's usable budget (as ``evaluate`` does)."""
    return [
        dataclasses.replace(
            c, feasible=c.prediction.device_peak_bytes <= budget
            and c.prediction.host_peak_bytes <= host_budget,
        )
        for c in choices
    ]


def _answer_cells(
    w: Workload, budget: int, best: Choice | None, hf: Choice | None, checkpoint_name: str,
    kind: str, gpu: str | None = None,
) -> dict[str, Any]:
    """A lookup cell's answer (overrides, predicted figures, snippet) and transformers' best."""
    row: dict[str, Any] = {}
    if hf is not None:
        row.update(
            transformers_config=" ".join(hf.candidate.overrides(w)[1:]),
            transformers_predicted_device_peak_bytes=hf.prediction.device_peak_bytes,
            transformers_candidate=asdict(hf.candidate),
        )
    if best is not None:
        p = best.prediction
        row.update(
            config=" ".join(best.candidate.overrides(w)[1:]),
            predicted_device_peak_bytes=p.device_peak_bytes,
            predicted_host_peak_bytes=p.host_peak_bytes,
            margin_bytes=budget - p.device_peak_bytes,
            quality=best.quality,
            trust=p.trust["statement"],
            snippet=snippet(w, best.candidate, checkpoint_name),
            candidate=asdict(best.candidate),
        )
        sp = answer_speed(w, best.candidate, kind, gpu, _speed_model())[0]
        if sp is not None:
            row.update(predicted_fps=sp.fps, predicted_end_to_end_s=sp.end_to_end_s,
                       speed_provenance=sp.provenance)
    return row


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
        "memory: total minus the CUDA context minus the allocator's headroom, min(ratio x peak, "
        "cap) fitted on the H200 records (`usable_bytes` in the CSV/JSON; sam2tune.gpus).",
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
    try:
        d = json.loads(path.read_text())
        rows = d["rows"] if isinstance(d, dict) else None
        if not isinstance(rows, list):
            raise ValueError("no 'rows' list")
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        raise InputError(
            f"lookup: {str(path)!r} is not a lookup table (sam2tune lookup writes one): "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    if d.get("host_budget_bytes") != host_budget:
        return None
    for r in rows:
        if not isinstance(r, dict) or "candidate" not in r:
            continue
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

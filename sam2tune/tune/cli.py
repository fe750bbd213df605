"""Command-line front ends of the memory model and the tuner: predict, fit, tune, recommend,
lookup. Arguments are ``key=value`` (OmegaConf dotlist onto typed dataclasses)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sam2tune.errors import InputError
from sam2tune.model.memory import Workload
from sam2tune.units import GiB, fmt_bytes

__all__ = ["predict_cmd", "fit_cmd", "tune_cmd", "recommend_cmd", "lookup_cmd"]


@dataclass
class TuneArgs:
    budget: str | None = None
    gpu: str | None = None
    host_budget: str | None = None  # None = this machine's RAM
    # the user's workload (recommend's default: SAM 2.1 large, 1024 px, 2 minutes at 30 fps)
    workload: Workload = field(
        default_factory=lambda: Workload(model="sam2.1_large", image_size=1024, num_frames=3600)
    )
    device_kind: str = "cuda"
    n_trials: int = 60
    confirm: int = 0
    confirm_frames: int = 8
    storage: str | None = None
    study_name: str | None = None
    results_dir: str = "results"
    model_file: str | None = None
    lookup: str | None = (
        None  # recommend: lookup table json (default results/lookup/gpu_lookup.json)
    )
    out: str | None = None
    format: str = "text"


def parse(args: list[str], command: str) -> TuneArgs:
    from omegaconf import OmegaConf

    try:
        base = OmegaConf.structured(TuneArgs)
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(args)))
        ta = OmegaConf.to_object(merged)
    except Exception as e:
        msg = str(e).splitlines()[0]
        raise InputError(f"{command}: {msg}") from None
    assert isinstance(ta, TuneArgs)
    if ta.device_kind not in ("cuda", "cpu"):
        raise InputError(f"device_kind: must be cuda or cpu, got {ta.device_kind!r}")
    return ta


def load_model(ta: TuneArgs):
    from sam2tune.model.memory import DEFAULT_MODEL_PATH, MemoryModel

    candidates = (
        [Path(ta.model_file)]
        if ta.model_file
        else [Path(ta.results_dir) / "memory_model.json", DEFAULT_MODEL_PATH]
    )
    for p in candidates:
        if p.is_file():
            return MemoryModel.load(p), p
    raise InputError(
        f"model_file: no memory model at {', '.join(map(str, candidates))} (run `sam2tune fit`)"
    )


def workload(ta: TuneArgs):
    """The workload with its model's exact weight size, and the model preset."""
    import dataclasses

    from sam2tune.model.presets import model_preset

    preset = model_preset(ta.workload.model)
    return dataclasses.replace(ta.workload, weights_bytes=preset.weights_bytes), preset


def host_budget(ta: TuneArgs) -> tuple[int, str]:
    from sam2tune.units import parse_bytes

    if ta.host_budget is None:
        import psutil

        b = int(psutil.virtual_memory().total)
        return b, f"{fmt_bytes(b)} (this machine's RAM)"
    try:
        b = parse_bytes(ta.host_budget, name="host_budget")
    except ValueError as e:
        raise InputError(str(e)) from None
    if b is None:
        raise InputError("host_budget: give a size such as 64GiB")
    return b, fmt_bytes(b)


def predict_cmd(args: list[str]) -> None:
    """``sam2tune predict <run overrides> [format=json] [model_file=...] [device_kind=cuda|cpu]``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from sam2tune.config.store import CONF_DIR, register
    from sam2tune.model.calibrate import candidate_of, workload_of
    from sam2tune.model.memory import predict

    own = {"format", "model_file", "device_kind"}
    opts = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.split("=", 1)[0] in own}
    overrides = [a for a in args if a.split("=", 1)[0] not in own]
    ta = TuneArgs(
        model_file=opts.get("model_file"),
        device_kind=opts.get("device_kind", "cuda"),
        format=opts.get("format", "text"),
    )
    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base=None, config_dir=str(CONF_DIR)):
            cfg = OmegaConf.to_object(compose("run", overrides=overrides))
    except Exception as e:
        cause = e.__cause__ or e
        raise InputError(str(cause).splitlines()[0]) from None
    model, path = load_model(ta)
    w = workload_of(cfg)
    c = candidate_of(cfg.knobs)
    p = predict(w, c, model, ta.device_kind)
    p["workload"] = asdict(w)
    p["knobs"] = asdict(c)
    p["model_file"] = str(path)
    p["figure"] = "predicted"
    if ta.format == "json":
        print(json.dumps(p, indent=1, default=str))
        return
    print(
        f"predicted for {w.model} @ {w.image_size} px, {w.num_frames} frames x {w.num_objects} "
        f"objects, {w.num_cond_frames} prompted frames; knobs {' '.join(c.overrides(w)[2:]) or 'stock'}"
    )
    print(f"accelerator ({ta.device_kind}) peak {fmt_bytes(p['device_peak_bytes'])} [predicted]:")
    for k, v in p["terms"].items():
        print(f"  {k:16s} {fmt_bytes(v):>12s}")
    print(
        f"host peak {fmt_bytes(p['host_peak_bytes'])} [predicted]: "
        + ", ".join(f"{k} {fmt_bytes(v)}" for k, v in p["host_terms"].items())
    )
    cal = p["calibrated_on"]
    print(
        f"calibrated on: {cal.get('coefficients')} runs={cal.get('runs')} devices={cal.get('devices')} "
        f"weights={cal.get('weights')} (model file {path})"
    )


def fit_cmd(args: list[str]) -> None:
    """``sam2tune fit [results_dir=DIR] [out=FILE]``: refit and report held-out error."""
    from sam2tune.model.calibrate import fit_and_evaluate

    ta = parse(args, "fit")
    try:
        model, ev, summary = fit_and_evaluate(ta.results_dir)
    except ValueError as e:
        raise InputError(str(e)) from None
    out = Path(ta.out or Path(ta.results_dir) / "memory_model.json")
    model.calibration["held_out"] = summary
    model.save(out)
    for kind, info in model.calibration.items():
        if kind == "held_out":
            continue
        print(
            f"[{kind}] fitted on {info['runs']} runs ({', '.join(info['devices'])}; weights "
            f"{', '.join(info['weights'])}; image sizes {info['image_sizes']}; up to "
            f"{info['max_frames']} frames); target {info['target']}"
        )
        print(f"  coefficients: {json.dumps(model.coeffs[kind])}")
    if not ev.empty:
        print("held-out runs (fitted on shorter videos, tested on the longest):")
        for r in ev.itertuples():
            print(
                f"  {r.run_id} {r.num_frames} frames ({r.frames_vs_fitted:.1f}x fitted): device "
                f"{fmt_bytes(r.device_pred)} vs {fmt_bytes(r.device_actual)} ({r.device_rel_err:.2%}), "
                f"host {fmt_bytes(r.host_pred)} vs {fmt_bytes(r.host_actual)} ({r.host_rel_err:.2%})"
            )
        for kind, s in summary.items():
            print(
                f"  [{kind}] device median {s['device_median_rel_err']:.2%} max "
                f"{s['device_max_rel_err']:.2%}; host median {s['host_median_rel_err']:.2%} max "
                f"{s['host_max_rel_err']:.2%} ({s['held_out_runs']} runs, up to "
                f"{s['frames_vs_fitted']:.1f}x the fitted length)"
            )
    print(f"model: {out}")


def _describe(ch, w, budget, hb, label="chosen") -> list[str]:
    p = ch.prediction
    margin = budget - p["device_peak_bytes"]
    return [
        f"{label}: {' '.join(ch.candidate.overrides(w)[1:])}",
        f"  predicted accelerator peak {fmt_bytes(p['device_peak_bytes'])}, margin "
        f"{fmt_bytes(margin)} ({margin / budget:.0%} of the budget) [predicted]",
        f"  predicted host peak {fmt_bytes(p['host_peak_bytes'])} of {fmt_bytes(hb)} [predicted]",
        f"  expected speed {ch.speed:.2f}x stock fps [{ch.speed_source}]",
        f"  expected quality: agreement {ch.quality:.3f} with the full-quality run [{ch.quality_source}]",
    ]


def recommend_cmd(args: list[str]) -> None:
    """``sam2tune recommend [budget=24GiB | gpu="RTX 4090"] [host_budget=...] workload.*=...``."""
    from sam2tune.model.memory import Candidate
    from sam2tune.tune.recommend import (
        from_lookup,
        nothing_fits,
        recommend,
        resolve_budget,
        snippet,
    )
    from sam2tune.tune.tuner import evaluate

    ta = parse(args, "recommend")
    budget, desc = resolve_budget(ta.budget, ta.gpu)
    hb, hdesc = host_budget(ta)
    w, preset = workload(ta)
    model, path = load_model(ta)
    cal = model.kind(ta.device_kind)[1]
    print(f"sam2tune recommendation for {desc}; host RAM {hdesc}")
    print(
        f"workload: {w.model} @ {w.image_size} px, {w.num_frames} frames, {w.num_objects} objects, "
        f"{w.num_cond_frames} prompted frame(s)"
    )
    lk = from_lookup(
        Path(ta.lookup or Path(ta.results_dir) / "lookup" / "gpu_lookup.json"), ta.gpu, w, hb
    )
    if lk is not None:
        best = evaluate(w, Candidate(**lk["candidate"]), budget, hb, model, ta.device_kind)
        source = "per-GPU lookup table"
    else:
        best, choices = recommend(w, budget, hb, model, ta.device_kind)
        source = f"memory model screen of the knob space ({len(choices)} candidates)"
        if best is None:
            print(nothing_fits(w, budget, hb, choices))
            sys.exit(1)
    print(f"answer from: {source}; memory model calibrated on {cal} ({path})")
    for line in _describe(best, w, budget, hb):
        print(line)
    print()
    print(snippet(w, best.candidate, preset.config_file, preset.checkpoint_name))


def tune_cmd(args: list[str]) -> None:
    """``sam2tune tune budget=24GiB [host_budget=64GiB] workload.*=... [n_trials=60] [confirm=2]
    [storage=URL] [study_name=NAME]``."""
    from sam2tune.results import load_results
    from sam2tune.tune.recommend import nothing_fits, resolve_budget
    from sam2tune.tune.tuner import TuneSpec, choose, run_tuner

    ta = parse(args, "tune")
    budget, desc = resolve_budget(ta.budget, ta.gpu)
    hb, hdesc = host_budget(ta)
    w, _ = workload(ta)
    model, path = load_model(ta)
    from sam2tune.analysis.frame import prepare

    data = prepare(load_results(ta.results_dir))
    spec = TuneSpec(
        w,
        budget,
        hb,
        ta.device_kind,
        ta.n_trials,
        ta.confirm,
        ta.confirm_frames,
        ta.storage,
        ta.study_name,
        ta.results_dir,
        data=data,
    )
    study, choices = run_tuner(spec, model)
    print(
        f"study {study.study_name}: {len(study.trials)} trials stored "
        f"({ta.storage or Path(ta.results_dir) / 'tune' / 'optuna_journal.log'})"
    )
    feas = sorted(
        [c for c in choices if c.feasible], key=lambda c: (-c.quality, c.escalation, -c.speed)
    )
    print(
        f"{len(choices)} distinct configurations screened, {len(feas)} within {desc} and host {hdesc}"
    )
    print(
        f"{'quality':>8s} {'speed':>6s} {'device peak':>12s} {'host peak':>12s} confirmed  config"
    )
    for c in feas[:10]:
        conf = c.confirmed["status"] if c.confirmed else "-"
        print(
            f"{c.quality:8.3f} {c.speed:6.2f} {fmt_bytes(c.prediction['device_peak_bytes']):>12s} "
            f"{fmt_bytes(c.prediction['host_peak_bytes']):>12s} {conf:9s}  "
            f"{' '.join(c.candidate.overrides(w)[1:])}"
        )
    best = choose(choices)
    if best is None:
        print(nothing_fits(w, budget, hb, choices))
        sys.exit(1)
    for line in _describe(best, w, budget, hb, "best"):
        print(line)
    _pareto_plot(
        choices, w, budget, Path(ta.results_dir) / "tune" / f"{study.study_name}_pareto.png"
    )


def _pareto_plot(choices, w, budget, out: Path) -> None:
    import pandas as pd

    from sam2tune.analysis.plots import _new, fig_png, pareto_front

    df = pd.DataFrame(
        [
            {
                "q": c.quality,
                "s": c.speed,
                "feasible": c.feasible,
                "mem": c.prediction["device_peak_bytes"],
            }
            for c in choices
        ]
    )
    fig, ax = _new()
    for feas, g in df.groupby("feasible"):
        ax.scatter(
            g["s"],
            g["q"],
            s=18,
            c="tab:blue" if feas else "lightgray",
            label="within budget" if feas else "over budget (infeasible)",
        )
    f = df[df.feasible]
    if not f.empty:
        f = f.assign(neg=-f["s"])
        front = pareto_front(f, "neg", "q")
        ax.plot(front["s"], front["q"], "k--", label="Pareto front")
    ax.set_xlabel("expected speed (x stock fps)")
    ax.set_ylabel("expected agreement with full quality")
    ax.set_title(
        f"Tuner: {w.num_frames} frames, {w.num_objects} objects, budget {budget / GiB:.1f} GiB"
    )
    ax.legend(fontsize=7)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(fig_png(fig))
    print(f"Pareto plot: {out}")


def lookup_cmd(args: list[str]) -> None:
    """``sam2tune lookup [workload.model=sam2.1_large] [host_budget=64GiB] [out=results/lookup]``."""
    from sam2tune.tune.recommend import lookup_table, write_lookup

    ta = parse(args, "lookup")
    hb, hdesc = host_budget(ta) if ta.host_budget else (64 * GiB, "64 GiB (default)")
    _, preset = workload(ta)
    model, path = load_model(ta)
    rows = lookup_table(model, preset.name, preset.weights_bytes, hb, ta.device_kind)
    csv, md = write_lookup(rows, Path(ta.out or Path(ta.results_dir) / "lookup"), hb)
    fits = sum(r["candidate"] is not None for r in rows)
    print(
        f"{len(rows)} cells ({fits} with a configuration that fits), host RAM {hdesc}, model file {path}"
    )
    print(f"lookup: {csv}\n        {md}")

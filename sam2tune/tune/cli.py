"""Command-line front ends of the memory model and the tuner: predict, fit, tune, recommend,
lookup. Arguments are ``key=value`` (OmegaConf dotlist onto typed dataclasses)."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sam2tune.config.store import compose_run, config_error_line
from sam2tune.errors import InputError
from sam2tune.memory_model.memory import Workload
from sam2tune.units import GiB, fmt_bytes

__all__ = ["predict_cmd", "fit_cmd", "tune_cmd", "recommend_cmd", "lookup_cmd"]


def _h(default, text: str, factory=None):
    """A field with its help text (shown by ``sam2tune COMMAND --help``)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


#: help of the workload's fields (``workload.<name>=``)
WORKLOAD_HELP = {
    "model": "model preset (sam2.1_tiny ... sam2.1_large, sam2_*)",
    "image_size": "input resolution S (multiple of 16)",
    "num_frames": "frames in the video (30 fps: 3600 = 2 minutes)",
    "num_objects": "objects tracked",
    "num_cond_frames": "prompted (conditioning) frames of each object",
    "object_frames": "object-frames tracked (null = objects x frames)",
    "weights_bytes": "(filled from the model preset)",
    "prompt_every": "each object re-prompted every this many frames (0 = num_cond_frames)",
    "video_height": "the video's own height (output masks, decoding)",
    "video_width": "the video's own width",
    "cond_frames": "(exact prompted frames per object; from runs)",
    "first_frames": "the frame each object is first prompted on, e.g. [0,0,450] (null = all on 0)",
}


@dataclass
class ModelArgs:
    """What every model-backed answer needs: the budgets, the workload, the model file."""

    budget: str | None = _h(None, "accelerator budget, e.g. 24GiB (GPU memory)")
    gpu: str | None = _h(None, 'a catalog GPU instead of budget, e.g. "RTX 4090" (conf/gpus.yaml)')
    host_budget: str | None = _h(None, "host RAM budget, e.g. 64GiB (default: this machine's)")
    workload: Workload = _h(
        None,
        "the user's workload (workload.<field>=...)",
        factory=lambda: Workload(model="sam2.1_large", image_size=1024, num_frames=3600),
    )
    device_kind: str = _h("cuda", "cuda | cpu: which coefficients and deductions apply")
    results_dir: str = _h("results", "recorded runs (scores, a fitted memory_model.json)")
    model_file: str | None = _h(None, "memory model JSON (default: results_dir's, else conf/)")
    impl: str = _h(
        "any",
        "any | sam2 | transformers: the implementations an answer may use (any: Meta's sam2 or "
        "transformers' Sam2VideoModel, whichever fits better)",
    )

    def validate(self) -> None:
        """One-line errors for values the type alone does not rule out."""
        from sam2tune.tune.space import impls_of

        if self.device_kind not in ("cuda", "cpu"):
            raise InputError(f"device_kind: must be cuda or cpu, got {self.device_kind!r}")
        impls_of(self.impl)


@dataclass
class TuneArgs(ModelArgs):
    """``sam2tune tune``: Optuna over the knob space, screened by the model."""

    n_trials: int = _h(60, "Optuna trials")
    confirm: int = _h(0, "confirm the best N with real short runs")
    confirm_frames: int = _h(8, "frames of each confirmation run")
    storage: str | None = _h(None, "Optuna storage URL (default: a journal file in results_dir)")
    study_name: str | None = _h(None, "Optuna study name (default: from the workload and budgets)")

    def validate(self) -> None:
        """One-line errors for values the type alone does not rule out."""
        super().validate()
        for name, low in (("n_trials", 1), ("confirm", 0), ("confirm_frames", 1)):
            v = getattr(self, name)
            if v < low:
                raise InputError(f"{name}: must be >= {low}, got {v}")


@dataclass
class RecommendArgs(ModelArgs):
    """``sam2tune recommend``: the best configuration for a GPU, and why."""

    lookup: str | None = _h(None, "lookup table JSON (default results_dir/lookup/gpu_lookup.json)")
    format: str = _h("text", "text | json (overrides, predicted figures, reasons, snippet)")
    verify: int = _h(
        0,
        "run the answer's snippet on this machine for N frames (synthetic video) and print "
        "measured against predicted (device peak, host peak, fps)",
    )
    checkpoint: str | None = _h(
        None, "verify with this checkpoint (default: the download cache, else random-init)"
    )

    def validate(self) -> None:
        """One-line errors for values the type alone does not rule out."""
        super().validate()
        if self.format not in ("text", "json"):
            raise InputError(f"format: must be text or json, got {self.format!r}")
        if self.verify < 0:
            raise InputError(f"verify: frames must be >= 0, got {self.verify}")


@dataclass
class LookupArgs(ModelArgs):
    """``sam2tune lookup``: the per-GPU lookup table."""

    out: str | None = _h(None, "output folder (default results_dir/lookup)")


@dataclass
class PredictArgs:
    """``sam2tune predict``: besides these, any ``sam2tune run`` override describes the run."""

    format: str = _h("text", "text | json")
    model_file: str | None = _h(None, "memory model JSON (default: conf/memory_model.json)")
    device_kind: str = _h("cuda", "cuda | cpu: which coefficients apply")
    budget: str | None = _h(None, "with a budget: max_frames_within_budget, e.g. 24GiB")
    gpu: str | None = _h(None, 'a catalog GPU instead of budget, e.g. "RTX 4090" (as recommend)')
    host_budget: str | None = _h(None, "host RAM budget for max_frames_within_budget")


@dataclass
class FitArgs:
    """``sam2tune fit``."""

    results_dir: str = _h("results", "calibration runs to fit on (several: A,B)")
    validation_dir: str | None = _h(
        None, "held-out runs: error per axis (random + extrapolation; several: A,B)"
    )
    out: str | None = _h(None, "model file (default results_dir/memory_model.json)")
    impl_dir: str | None = _h(
        None,
        "runs of impl=transformers (e.g. results/implementations): its activation ratios to "
        "sam2's (several: A,B; their sam2 runs are not used)",
    )


@dataclass
class CalibrateArgs:
    """``sam2tune calibrate``: besides these, run overrides applied to every point."""

    design: str = _h(
        "calibration", "calibration | validation (sam2tune/memory_model/design.py)"
    )
    seed: int = _h(0, "seed of the validation set's random draw")
    jobs: int = _h(
        1,
        "isolated runs at once (one GPU shared: allocator figures stay per process; "
        "NVML device-wide figures and free-at-start then include the other runs)",
    )


COMMAND_ARGS = {
    "predict": PredictArgs,
    "fit": FitArgs,
    "calibrate": CalibrateArgs,
    "tune": TuneArgs,
    "recommend": RecommendArgs,
    "lookup": LookupArgs,
}


def command_help(command: str) -> str:
    """``--help`` text generated from the command's typed arguments."""
    import dataclasses

    cls = COMMAND_ARGS[command]
    func = globals()[f"{command}_cmd"]
    usage = (
        " ".join((func.__doc__ or "").split("``")[1].split())
        if "``" in (func.__doc__ or "")
        else command
    )
    lines = [f"usage: {usage}", "", (cls.__doc__ or "").strip().replace("``", "`"), ""]
    lines.append("arguments (key=value; default shown):")

    def row(key: str, value, text: str) -> str:
        v = "null" if value is None else value
        return f"  {key}={v}".ljust(38) + f" {text}"

    for f in dataclasses.fields(cls):
        if f.name == "workload":
            default = f.default_factory()  # type: ignore[misc,operator]
            for wf in dataclasses.fields(Workload):
                if wf.name in ("weights_bytes", "cond_frames", "object_frames"):
                    continue  # filled by sam2tune
                lines.append(
                    row(f"workload.{wf.name}", getattr(default, wf.name), WORKLOAD_HELP[wf.name])
                )
            continue
        lines.append(row(f.name, f.default, f.metadata.get("help", "")))
    return "\n".join(lines)


def split_args(args: list[str], command: str, cls: type):
    """(typed own arguments, the remaining run overrides) for commands that take both."""
    import dataclasses

    own = {f.name for f in dataclasses.fields(cls)}
    mine = [a for a in args if a.split("=", 1)[0].lstrip("+") in own]
    rest = [a for a in args if a.split("=", 1)[0].lstrip("+") not in own]
    return parse(mine, command, cls), rest


def parse(args: list[str], command: str, cls: type = TuneArgs):
    """Typed arguments of a command from ``key=value`` pairs (unknown keys refused)."""
    from omegaconf import OmegaConf

    # `+key=` / `++key=` as in `sam2tune run` (Hydra's add / force-add): every key here exists
    args = [a.lstrip("+") if "=" in a else a for a in args]
    try:
        base = OmegaConf.structured(cls)
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(args)))
        ta = OmegaConf.to_object(merged)
    except Exception as e:
        raise InputError(f"{command}: {config_error_line(e)}") from None
    assert isinstance(ta, cls)
    if hasattr(ta, "validate"):
        ta.validate()
    return ta


def load_model(ta: ModelArgs):
    """The memory model file to use (model_file, else results_dir's, else the shipped one)."""
    from sam2tune.memory_model.memory import DEFAULT_MODEL_PATH, MemoryModel

    candidates = (
        [Path(ta.model_file)]
        if ta.model_file
        else [Path(ta.results_dir) / "memory_model.json", DEFAULT_MODEL_PATH]
    )
    for p in candidates:
        if p.is_file():
            try:
                return MemoryModel.load(p), p
            except ValueError as e:
                raise InputError(str(e)) from None
    raise InputError(
        f"model_file: no memory model at {', '.join(map(str, candidates))} (run `sam2tune fit`)"
    )


def workload(ta: TuneArgs):
    """The workload with its model's exact weight size, and the model preset."""
    import dataclasses

    from sam2tune.config.presets import model_preset

    preset = model_preset(ta.workload.model)
    return dataclasses.replace(ta.workload, weights_bytes=preset.weights_bytes), preset


def host_budget(ta: TuneArgs) -> tuple[int, str]:
    """The host RAM budget in bytes and how it was chosen."""
    from sam2tune.units import parse_bytes

    if ta.host_budget is None:
        import psutil

        b = int(psutil.virtual_memory().total)
        return b, f"{fmt_bytes(b)} (this machine's RAM)"
    try:
        parsed = parse_bytes(ta.host_budget, name="host_budget")
    except ValueError as e:
        raise InputError(str(e)) from None
    if parsed is None:
        raise InputError("host_budget: give a size such as 64GiB")
    return parsed, fmt_bytes(parsed)


def calibrate_cmd(args: list[str]) -> None:
    """``sam2tune calibrate [design=calibration|validation] [seed=0] [results_dir=DIR]
    [<run overrides applied to every point, e.g. device=cuda>]``: run a designed set of points
    (resumable: points already recorded ok are skipped)."""
    from tqdm import tqdm

    from sam2tune.memory_model.design import design_points
    from sam2tune.runner.launcher import run_isolated, stop_runs
    from sam2tune.sweep import already_done

    ca, extra = split_args(args, "calibrate", CalibrateArgs)
    if not any(a.startswith("results_dir=") for a in extra):
        extra.append(f"results_dir=results/cpu-{ca.design}")
    try:
        points = design_points(ca.design, ca.seed)
    except ValueError as e:
        raise InputError(str(e)) from None
    cfgs = [(pt, compose_run(pt.args() + extra)) for pt in points]  # validate every point first
    if ca.jobs < 1:
        raise InputError(f"jobs: must be >= 1, got {ca.jobs}")
    counts: dict[str, int] = {}
    todo = []
    for pt, cfg in cfgs:
        if already_done(cfg) is not None:
            counts["skipped"] = counts.get("skipped", 0) + 1
        else:
            todo.append((pt, cfg))
    bar = tqdm(total=len(todo), desc="calibrate", unit="run", file=sys.stderr)

    def one(item: tuple[Any, Any]) -> None:
        pt, cfg = item
        st = run_isolated(cfg).row
        counts[st["status"]] = counts.get(st["status"], 0) + 1
        if st["status"] != "ok":
            what = " ".join(pt.overrides)
            tqdm.write(f"  {st['status']}: {what}: {st.get('error')}", file=sys.stderr)
        bar.set_postfix_str(pt.axis)
        bar.update()

    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=ca.jobs)  # each run is its own process
    try:
        list(pool.map(one, todo))
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM reach this thread only: stop the runs too
        pool.shutdown(wait=False, cancel_futures=True)
        stop_runs()
        raise
    pool.shutdown()
    bar.close()
    print(
        f"{len(cfgs)} points ({', '.join(f'{k}={v}' for k, v in sorted(counts.items()))}) "
        f"in {cfgs[0][1].results_dir if cfgs else '-'}"
    )


def _predict_budgets(pa: PredictArgs) -> dict[str, int]:
    from sam2tune.units import parse_bytes

    budgets: dict[str, int] = {}
    if pa.gpu is not None:
        from sam2tune.gpus import resolve_budget

        budgets["budget"] = resolve_budget(pa.budget, pa.gpu)[0]
    for name in ("budget", "host_budget") if pa.gpu is None else ("host_budget",):
        if getattr(pa, name) is not None:
            try:
                b = parse_bytes(getattr(pa, name), name=name)
            except ValueError as e:
                raise InputError(str(e)) from None
            if b is not None:
                budgets[name] = b
    return budgets


def _frames_within(
    make: Any, c: Any, model: Any, device_kind: str, budgets: dict[str, int]
) -> tuple[int | None, dict[str, int | None]]:
    """max_frames_within_budget for the given knobs and for each strategy (stock, with
    offload_video, release, stream); ``make(n)``: the workload at ``n`` frames."""
    import dataclasses

    from sam2tune.memory_model.memory import max_frames_within_budget

    variants = {
        "stock": dataclasses.replace(c, offload_video_to_cpu=False, strategy="stock"),
        "offload_video": dataclasses.replace(c, offload_video_to_cpu=True, strategy="stock"),
        "release": dataclasses.replace(c, strategy="release"),
        "stream": dataclasses.replace(c, offload_video_to_cpu=False, strategy="stream"),
    }
    if c.impl == "transformers":  # sam2tune's strategies run on Meta's sam2 only
        variants = {k: v for k, v in variants.items() if k in ("stock", "offload_video")}
    b, hb = budgets["budget"], budgets.get("host_budget")
    own = max_frames_within_budget(make, c, model, device_kind, b, hb)
    return own, {
        name: max_frames_within_budget(make, cv, model, device_kind, b, hb)
        for name, cv in variants.items()
    }


def _print_prediction(p: dict[str, Any], w: Any, c: Any, kind: str, budgets, path) -> None:
    r = p["memory_read"]
    print(
        f"predicted for {w.model} @ {w.image_size} px, {w.num_frames} frames x {w.num_objects} "
        f"objects, {w.num_cond_frames} prompted frames; knobs "
        f"{' '.join(c.overrides(w)[2:]) or 'stock'}"
    )
    print(f"prompts assumed: {p['prompt_schedule']}")
    print(f"accelerator ({kind}) peak {fmt_bytes(p['device_peak_bytes'])} [predicted]:")
    for k, v in p["terms"].items():
        print(f"  {k:16s} {fmt_bytes(v):>12s}")
    ph = p["activation_phases"]
    print(
        f"  (activations: image encoder {fmt_bytes(ph['image_encoder'])}, memory attention "
        f"{fmt_bytes(ph['memory_attention'])} reading {r['frames']} memory frames + "
        f"{r['pointers']} object pointers = {r['tokens']} tokens x {r['batch']} object(s) "
        "per batch)"
    )
    print(
        f"host peak {fmt_bytes(p['host_peak_bytes'])} [predicted]: "
        + ", ".join(f"{k} {fmt_bytes(v)}" for k, v in p["host_terms"].items())
    )
    print(f"trust: {p['trust']['statement']}")
    if "usable_rule" in p:
        verdict = "fits" if p["fits"] else "does NOT fit"
        print(f"budget: {p['usable_rule']}: {verdict} [predicted]")
    fits = p.get("max_frames_within_budget_by_strategy")
    if fits:
        hb = budgets.get("host_budget")
        within = f"usable {fmt_bytes(budgets['budget'])}"
        within += f" and host {fmt_bytes(hb)}" if hb else ""
        print(f"frames that fit within {within} [predicted]:")
        for name, n in fits.items():
            limit = "no limit (the peak does not grow with frames)" if n is None else n
            print(f"  {name:14s} {limit}")
    cal = p["calibrated_on"]
    print(
        f"calibrated on: {cal.get('coefficients')} runs={cal.get('runs')} "
        f"devices={cal.get('devices')} "
        f"weights={cal.get('weights')} (model file {path})"
    )


def predict_cmd(args: list[str]) -> None:
    """``sam2tune predict <run overrides | workload.*=...> [format=json] [model_file=...]
    [device_kind=cuda|cpu] [budget=24GiB | gpu=NAME] [host_budget=64GiB]``."""
    from sam2tune.memory_model.calibrate import candidate_of, workload_of
    from sam2tune.memory_model.memory import predict

    wargs = [a for a in args if a.startswith("workload.")]  # recommend's workload grammar
    pa, overrides = split_args([a for a in args if a not in wargs], "predict", PredictArgs)
    if pa.format not in ("text", "json"):
        raise InputError(f"format: must be text or json, got {pa.format!r}")
    if pa.device_kind not in ("cuda", "cpu"):
        raise InputError(f"device_kind: must be cuda or cpu, got {pa.device_kind!r}")
    ta = ModelArgs(model_file=pa.model_file, device_kind=pa.device_kind)
    budgets = _predict_budgets(pa)
    cfg = compose_run(overrides)
    model, path = load_model(ta)
    if cfg.video.kind != "synthetic":  # a real video: its frame count and size, validated
        import dataclasses as dc

        from sam2tune.paths import cache_dir
        from sam2tune.video.sources import resolve_video

        vd = resolve_video(cfg.video, cache_dir(cfg.cache_dir))
        cfg.video = dc.replace(
            cfg.video, num_frames=vd.num_frames, height=vd.height, width=vd.width
        )
    w = workload(parse(wargs, "predict", ModelArgs))[0] if wargs else workload_of(cfg)
    c = dataclasses.replace(candidate_of(cfg.knobs), impl=cfg.impl.name)
    if wargs:  # the knobs' image size is the workload's
        c = dataclasses.replace(c, image_size=w.image_size)
    p = predict(w, c, model, ta.device_kind)
    from sam2tune.tune.answer import prompt_schedule

    p.update(workload=asdict(w), knobs=asdict(c), model_file=str(path), figure="predicted")
    p["prompt_schedule"] = prompt_schedule(w) + (
        " (the synthetic video: its last object enters after the first frame; recommend's "
        "workload.* assumes every object on frame 0 unless workload.first_frames says otherwise)"
        if cfg.video.kind == "synthetic" and w.num_objects > 1 and not wargs else ""
    )
    if budgets.get("budget"):
        from sam2tune.gpus import usable_memory

        p["budget_bytes"] = budgets["budget"]
        usable, rule = usable_memory(budgets["budget"], model, ta.device_kind)
        budgets = dict(budgets, budget=usable)  # frames within the usable memory
        p["usable_budget_bytes"], p["usable_rule"] = usable, rule
        p["fits"] = p["device_peak_bytes"] <= usable and (
            "host_budget" not in budgets or p["host_peak_bytes"] <= budgets["host_budget"]
        )
        p["host_budget_bytes"] = budgets.get("host_budget")
        own, by_strategy = _frames_within(
            w.with_frames if wargs else (lambda n: workload_of(cfg, n)), c, model,
            ta.device_kind, budgets,
        )
        p["max_frames_within_budget"] = own
        p["max_frames_within_budget_by_strategy"] = by_strategy
    if pa.format == "json":
        print(json.dumps(p, indent=1, default=str))
        return
    _print_prediction(p, w, c, ta.device_kind, budgets, path)


def fit_cmd(args: list[str]) -> None:
    """``sam2tune fit [results_dir=DIR] [validation_dir=DIR] [out=FILE]``: refit, and with a
    validation set report the held-out and extrapolation error per axis."""
    from sam2tune.memory_model.calibrate import fit_and_evaluate

    fa = parse(args, "fit", FitArgs)
    results = fa.results_dir.split(",")
    impl_dirs = fa.impl_dir.split(",") if fa.impl_dir else None
    for d in results + (fa.validation_dir.split(",") if fa.validation_dir else []) + (
        impl_dirs or []
    ):
        if not Path(d).is_dir():
            raise InputError(f"results_dir / validation_dir / impl_dir: no such folder {d!r}")
    try:
        model, ev, summary = fit_and_evaluate(
            results, fa.validation_dir.split(",") if fa.validation_dir else None,
            impl_dir=impl_dirs,
        )
    except ValueError as e:
        raise InputError(str(e)) from None
    out = Path(fa.out or Path(results[0]) / "memory_model.json")
    model.calibration["held_out"] = summary
    try:
        model.save(out)
    except OSError as e:
        raise InputError(f"out: cannot write {str(out)!r} ({e.strerror or e})") from None
    for kind, info in model.calibration.items():
        if kind == "held_out":
            continue
        s = info["summary"]
        print(
            f"[{kind}] fitted on {info['runs']} runs ({', '.join(s['devices'])}; weights "
            f"{', '.join(s['weights'])}); target {s['target']}"
        )
        print(f"  coefficients: {json.dumps(model.coeffs[kind])}")
    if not ev.empty:
        print_errors(ev, summary)
    print(f"model: {out}")


def print_errors(ev, summary) -> None:
    """Per-run and per-axis errors of the held-out and extrapolation runs."""
    for r in ev.itertuples():
        print(
            f"  {r.axis:24s} {r.model} {r.image_size}px {r.num_frames}f {r.num_objects}obj "
            f"mem={r.memory_frames} {r.knobs}: device {fmt_bytes(r.device_pred)} vs "
            f"{fmt_bytes(r.device_actual)} ({r.device_err:+.1%}), host {fmt_bytes(r.host_pred)} "
            f"vs {fmt_bytes(r.host_actual)} ({r.host_err:+.1%}); activations "
            f"{fmt_bytes(r.act_pred)} vs {fmt_bytes(r.act_actual)} ({r.act_err:+.1%})"
        )
    for kind, axes in summary.items():
        for axis, s in axes.items():
            print(
                f"  [{kind}] {axis:24s} {s['runs']:3d} runs: device median "
                f"{s['device_median']:.1%} "
                f"max {s['device_max']:.1%}; host median {s['host_median']:.1%} "
                f"max {s['host_max']:.1%}; activations alone median "
                f"{s['activations_median']:.1%} max {s['activations_max']:.1%}"
            )


def choice_lines(
    label: str, overrides: list[str], device_peak: int, host_peak: int, budget: int, hb: int,
    speed: float, speed_source: str, quality: float, quality_source: str,
) -> list[str]:
    """A chosen configuration as text (``tune``'s best and ``recommend``'s answer alike):
    ``budget`` is the usable accelerator memory, ``hb`` the host budget."""
    margin = budget - device_peak
    return [
        f"{label}: {' '.join(overrides)}",
        f"  predicted accelerator peak {fmt_bytes(device_peak)}, margin {fmt_bytes(margin)} "
        f"({margin / max(1, budget):.0%} of the usable budget) [predicted]",
        f"  predicted host peak {fmt_bytes(host_peak)} of {fmt_bytes(hb)} [predicted]",
        f"  expected speed {speed:.2f}x stock's [{speed_source}]",
        f"  expected quality: agreement {quality:.3f} with the full-quality run "
        f"[{quality_source}]",
    ]


def _describe(ch, w, budget, hb, label="chosen") -> list[str]:
    p = ch.prediction
    return choice_lines(
        label, ch.candidate.overrides(w)[1:], p["device_peak_bytes"], p["host_peak_bytes"],
        budget, hb, ch.speed, ch.speed_source, ch.quality, ch.quality_source,
    )


def _why(ch, w, budget, hb, model, device_kind) -> list[str]:
    """Why the chosen knobs: what the workload would need without each remedy it takes."""
    import dataclasses

    from sam2tune.memory_model.memory import predict

    c = ch.candidate
    p = ch.prediction
    r, ph = p["memory_read"], p["activation_phases"]
    out = [
        f"  attention: each step reads {r['frames']} memory frames + {r['pointers']} object "
        f"pointers ({r['tokens']} tokens x {r['batch']} object(s)); activations "
        f"{fmt_bytes(p['terms']['activations'])} (memory attention "
        f"{fmt_bytes(ph['memory_attention'])}, "
        f"image encoder {fmt_bytes(ph['image_encoder'])}) [predicted]"
    ]
    checks = []
    if c.max_cond_frames_in_attn != -1:
        checks.append(
            ("max_cond_frames_in_attn", dataclasses.replace(c, max_cond_frames_in_attn=-1))
        )
    if c.offload_video_to_cpu:
        checks.append(("offload_video_to_cpu", dataclasses.replace(c, offload_video_to_cpu=False)))
    if c.strategy != "stock":
        checks.append((f"strategy={c.strategy}", dataclasses.replace(c, strategy="stock")))
    if c.offload_state_to_cpu:
        checks.append(("offload_state_to_cpu", dataclasses.replace(c, offload_state_to_cpu=False)))
    for name, alt in checks:
        q = predict(w, alt, model, device_kind)
        over_dev = q["device_peak_bytes"] > budget
        over_host = q["host_peak_bytes"] > hb
        if not (over_dev or over_host):
            continue
        qr = q["memory_read"]
        what = []
        if over_dev:
            what.append(
                f"accelerator {fmt_bytes(q['device_peak_bytes'])} > {fmt_bytes(budget)}"
                + (
                    f" (attention would read {qr['frames']} memory frames: activations "
                    f"{fmt_bytes(q['terms']['activations'])})"
                    if name == "max_cond_frames_in_attn"
                    else ""
                )
            )
        if over_host:
            what.append(f"host {fmt_bytes(q['host_peak_bytes'])} > {fmt_bytes(hb)}")
        out.append(f"  why {name}: without it, {'; '.join(what)} [predicted]")
    out.append(f"  trust: {p['trust']['statement']}")
    return out


def recorded_runs(results_dir: str) -> Any:
    """The recorded runs under ``results_dir`` prepared for scoring quality and speed (None when
    there are none): ``tune``, ``recommend`` and ``lookup`` score with the same data."""
    import warnings

    from sam2tune.analysis.table import prepare
    from sam2tune.results import InvalidRecordWarning, load_results

    if not Path(results_dir).is_dir():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InvalidRecordWarning)  # `sam2tune report` lists them
        df = load_results(results_dir)
    return prepare(df) if not df.empty else None


def recommend_cmd(args: list[str]) -> None:
    """``sam2tune recommend [budget=24GiB | gpu="RTX 4090"] [host_budget=...] workload.*=...
    [format=text|json] [verify=N]``."""
    from sam2tune.tune.answer import NothingFits, answer, describe

    ta = parse(args, "recommend", RecommendArgs)
    try:
        rec = answer(ta)
    except NothingFits as e:
        if ta.format == "json":
            print(json.dumps({"config": None, "nothing_fits": str(e),
                              "usable_budget_bytes": e.usable_budget_bytes}, indent=1))
        else:
            print(str(e))
        sys.exit(1)
    checked = None
    if ta.verify:
        from sam2tune.tune.verify import verify

        checked = verify(rec, ta.verify, checkpoint=ta.checkpoint, quiet=ta.format == "json")
    if ta.format == "json":
        d = rec.to_dict()
        d["verify"] = checked
        print(json.dumps(d, indent=1, default=str))
        return
    for line in describe(rec):
        print(line)
    print()
    print(rec.snippet)
    if checked is not None:
        from sam2tune.tune.verify import verify_lines

        for line in verify_lines(checked):
            print(line)


def tune_cmd(args: list[str]) -> None:
    """``sam2tune tune budget=24GiB [host_budget=64GiB] workload.*=... [n_trials=60] [confirm=2]
    [storage=URL] [study_name=NAME]``."""
    from sam2tune.gpus import resolve_budget, usable_memory
    from sam2tune.tune.recommend import nothing_fits
    from sam2tune.tune.space import impls_of
    from sam2tune.tune.tuner import TuneSpec, choose, ranked, run_tuner

    ta = parse(args, "tune", TuneArgs)
    total, desc = resolve_budget(ta.budget, ta.gpu)
    hb, hdesc = host_budget(ta)
    w, _ = workload(ta)
    model, path = load_model(ta)
    budget, udesc = usable_memory(total, model, ta.device_kind)
    print(f"budget: {udesc}")
    data = recorded_runs(ta.results_dir)
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
        impls=impls_of(ta.impl),
    )
    study, choices = run_tuner(spec, model)
    print(
        f"study {study.study_name}: {len(study.trials)} trials stored "
        f"({ta.storage or Path(ta.results_dir) / 'tune' / 'optuna_journal.log'})"
    )
    feas = ranked(choices)
    print(
        f"{len(choices)} distinct configurations screened, {len(feas)} within {desc} and "
        f"host {hdesc}"
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
        print(nothing_fits(w, budget, hb, choices, model, ta.device_kind))
        sys.exit(1)
    for line in _describe(best, w, budget, hb, "best"):
        print(line)
    _pareto_plot(
        choices, w, budget, Path(ta.results_dir) / "tune" / f"{study.study_name}_pareto.png"
    )


def _pareto_plot(choices, w, budget, out: Path) -> None:
    import pandas as pd

    from sam2tune.analysis.plots import fig_png, new_figure, pareto_front
    from sam2tune.paths import atomic_write

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
    fig, ax = new_figure()
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
    png = fig_png(fig)
    atomic_write(out, lambda tmp: tmp.write_bytes(png))  # workers sharing a study share it
    print(f"Pareto plot: {out}")


def lookup_cmd(args: list[str]) -> None:
    """``sam2tune lookup [workload.model=sam2.1_large] [host_budget=64GiB]
    [out=results/lookup]``."""
    from sam2tune.tune.recommend import lookup_table, write_lookup

    ta = parse(args, "lookup", LookupArgs)
    hb, hdesc = host_budget(ta) if ta.host_budget else (64 * GiB, "64 GiB (default)")
    _, preset = workload(ta)
    model, path = load_model(ta)
    from sam2tune.tune.space import impls_of

    rows = lookup_table(
        model,
        preset.name,
        preset.weights_bytes,
        hb,
        ta.device_kind,
        recorded_runs(ta.results_dir),
        impls_of(ta.impl),
    )
    csv, md = write_lookup(rows, Path(ta.out or Path(ta.results_dir) / "lookup"), hb)
    fits = sum(r["candidate"] is not None for r in rows)
    print(
        f"{len(rows)} cells ({fits} with a configuration that fits), host RAM {hdesc}, "
        f"model file {path}"
    )
    print(f"lookup: {csv}\n        {md}")

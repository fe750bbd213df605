"""Command-line front ends of the memory model and the tuner: predict, fit, tune, recommend,
lookup. Arguments are ``key=value`` (OmegaConf dotlist onto typed dataclasses)."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sam2tune.config.args import parse, split_args
from sam2tune.config.store import check_repeated_keys, compose_run
from sam2tune.errors import InputError
from sam2tune.paths import check_results_dir
from sam2tune.tune.answer import prompt_schedule
from sam2tune.tune.args import (
    WORKLOAD_OF_RUN,
    CalibrateArgs,
    FitArgs,
    LookupArgs,
    ModelArgs,
    PredictArgs,
    RecommendArgs,
    TuneArgs,
    host_budget,
    load_model,
    recorded_runs,
    workload,
)
from sam2tune.tune.space import answer_speed
from sam2tune.tune.storage import check_storage, check_study_name
from sam2tune.tune.text import describe_choice, print_errors, ranked_table
from sam2tune.units import GiB, fmt_bytes

#: the longest video ``max_frames_within_budget`` tries (its default limit)
MAX_FRAMES_SEARCHED = 10_000_000

__all__ = ["predict_cmd", "fit_cmd", "tune_cmd", "recommend_cmd", "lookup_cmd"]


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
    src = p.get("host_sources", {})
    print(
        "  (host terms: "
        + "; ".join(f"{k} {src[k]}" for k in ("baseline", "allocator") if k in src)
        + "; the others exact)"
    )
    print(f"trust: {p['trust']['statement']}")
    print(f"speed: {p['speed']['text']} [predicted: {p['speed']['provenance']}]")
    if "fits" in p:
        verdict = "fits" if p["fits"] else "does NOT fit: " + "; ".join(p["does_not_fit"])
        rule = p.get("usable_rule") or (f"host {fmt_bytes(p['host_budget_bytes'])} (no "
                                        "accelerator budget given: the host alone)")
        print(f"budget: {rule}: {verdict} [predicted]")
    fits = p.get("max_frames_within_budget_by_strategy")
    if fits:
        hb = budgets.get("host_budget")
        within = f"usable {fmt_bytes(budgets['budget'])}"
        within += f" and host {fmt_bytes(hb)}" if hb else ""
        print(f"frames that fit within {within} [predicted]:")
        for name, n in fits.items():
            limit = ("no limit (the peak does not grow with frames)" if n is None
                     else f"{n:,} or more (the search stops there)" if n >= MAX_FRAMES_SEARCHED
                     else n)
            print(f"  {name:14s} {limit}")
    cal = p["calibrated_on"]
    print(
        f"calibrated on: {cal.get('coefficients')} runs={cal.get('runs')} "
        f"devices={cal.get('devices')} "
        f"weights={cal.get('weights')} (model file {path})"
    )


def _speed_of(w: Any, c: Any, kind: str, gpu: str | None) -> dict[str, Any]:
    """The speed model's figures for ``predict``: fps, end-to-end time, their provenance."""
    sp, text, rests = answer_speed(w, c, kind, gpu)
    return {**(sp.to_dict() if sp else {}), "text": text, "provenance": rests}


def _refuse_two_workloads(overrides: list[str]) -> None:
    """With ``workload.*`` the workload is that one: a run key describing a workload as well
    (``video.num_objects=5``) would be silently ignored, so it is refused, naming the
    ``workload.*`` key that says it."""
    for ov in overrides:
        key = ov.split("=", 1)[0].lstrip("+~")
        if key in WORKLOAD_OF_RUN or key.split(".")[0] in ("model", "video", "scenario"):
            same = WORKLOAD_OF_RUN.get(key)
            say = (f"say {same}=... instead" if same
                   else "describe the workload with run keys only, or with workload.* only")
            raise InputError(
                f"predict: {key}: a run key describing the workload, given with workload.* "
                f"(which describes it here, so this one would be ignored): {say}"
            )


def _judge_budgets(
    p: dict[str, Any], budgets: dict[str, int], model: Any, kind: str, make: Any, c: Any
) -> dict[str, int]:
    """``predict``'s verdict against its budgets, into ``p``: fits or what does not (host,
    accelerator), the usable memory and the frames that fit per strategy (``make(n)``: the
    workload at ``n`` frames). Returns the budgets with the usable accelerator memory."""
    if budgets.get("host_budget") and not budgets.get("budget"):  # the host alone judged
        hb = budgets["host_budget"]
        p["host_budget_bytes"], p["fits"] = hb, p["host_peak_bytes"] <= hb
        p["does_not_fit"] = [] if p["fits"] else [
            f"host peak {fmt_bytes(p['host_peak_bytes'])} > host_budget {fmt_bytes(hb)}"]
    if budgets.get("budget"):
        from sam2tune.gpus import usable_memory

        p["budget_bytes"] = budgets["budget"]
        usable, rule = usable_memory(budgets["budget"], model, kind)
        budgets = dict(budgets, budget=usable)  # frames within the usable memory
        p["usable_budget_bytes"], p["usable_rule"] = usable, rule
        over = []  # what does not fit, named (the device, the host or both)
        if p["device_peak_bytes"] > usable:
            over.append(f"accelerator peak {fmt_bytes(p['device_peak_bytes'])} > usable "
                        f"{fmt_bytes(usable)}")
        if "host_budget" in budgets and p["host_peak_bytes"] > budgets["host_budget"]:
            over.append(f"host peak {fmt_bytes(p['host_peak_bytes'])} > host_budget "
                        f"{fmt_bytes(budgets['host_budget'])}")
        p["fits"], p["does_not_fit"] = not over, over
        p["host_budget_bytes"] = budgets.get("host_budget")
        own, by_strategy = _frames_within(make, c, model, kind, budgets)
        p["max_frames_within_budget"] = own
        p["max_frames_within_budget_by_strategy"] = by_strategy
    return budgets


def predict_cmd(args: list[str]) -> None:
    """``sam2tune predict <run overrides | workload.*=...> [format=json] [model_file=...]
    [device_kind=cuda|cpu] [budget=24GiB | gpu=NAME] [host_budget=64GiB]``."""
    from sam2tune.memory_model.calibrate import candidate_of, workload_of
    from sam2tune.memory_model.memory import predict

    wargs = [a for a in args if a.startswith("workload.")]  # recommend's workload grammar
    pa, overrides = split_args([a for a in args if a not in wargs], "predict", PredictArgs)
    if wargs:
        _refuse_two_workloads(overrides)
    from sam2tune.config.store import check_override_keys
    from sam2tune.memory_model.workload import Workload

    check_override_keys(overrides, command="predict", also=[
        *(f.name for f in dataclasses.fields(PredictArgs)),
        *(f"workload.{f.name}" for f in dataclasses.fields(Workload))])
    if pa.format not in ("text", "json"):
        raise InputError(f"format: must be text or json, got {pa.format!r}")
    if pa.device_kind not in ("cuda", "cpu"):
        raise InputError(f"device_kind: must be cuda or cpu, got {pa.device_kind!r}")
    ta = ModelArgs(model_file=pa.model_file, device_kind=pa.device_kind)
    budgets = _predict_budgets(pa)
    check_repeated_keys(args)
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
    p = predict(w, c, model, ta.device_kind).to_dict()
    p.update(workload=asdict(w), knobs=asdict(c), model_file=str(path), figure="predicted")
    p["speed"] = _speed_of(w, c, ta.device_kind, pa.gpu)
    p["prompt_schedule"] = prompt_schedule(w) + (
        " (the synthetic video: its last object enters after the first frame; recommend's "
        "workload.* assumes every object on frame 0 unless workload.first_frames says otherwise)"
        if cfg.video.kind == "synthetic" and w.num_objects > 1 and not wargs else ""
    )
    budgets = _judge_budgets(
        p, budgets, model, ta.device_kind,
        w.with_frames if wargs else (lambda n: workload_of(cfg, n)), c,
    )
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
    from sam2tune.tune.tuner import TuneSpec, choose, ranked, run_tuner, stored_trials

    ta = parse(args, "tune", TuneArgs)
    check_study_name(ta.study_name)
    if ta.storage:
        check_storage(ta.storage)
    else:
        check_results_dir(ta.results_dir)
    total, desc = resolve_budget(ta.budget, ta.gpu)
    hb, hdesc = host_budget(ta)
    w, _ = workload(ta)
    model, path = load_model(ta)
    budget, udesc = usable_memory(total, model, ta.device_kind)
    print(f"budget: {udesc}")
    data = recorded_runs(ta.results_dir)
    spec = TuneSpec(
        w, budget, hb, ta.device_kind, ta.n_trials, ta.confirm, ta.confirm_frames, ta.storage,
        ta.study_name, ta.results_dir, data=data, impls=impls_of(ta.impl),
    )
    try:
        study, choices = run_tuner(spec, model)
    except KeyboardInterrupt:
        print(f"sam2tune: interrupted: {stored_trials(spec)}; the same command resumes it",
              file=sys.stderr)
        sys.exit(130)
    print(
        f"study {study.study_name}: {len(study.trials)} trials stored "
        f"({ta.storage or Path(ta.results_dir) / 'tune' / 'optuna_journal.log'})"
    )
    feas = ranked(choices)
    print(
        f"{len(choices)} distinct configurations screened, {len(feas)} within {desc} and "
        f"host {hdesc}"
    )
    for line in ranked_table(feas[:10], w):
        print(line)
    best = choose(choices)
    if best is None:
        print(nothing_fits(w, budget, hb, choices, model, ta.device_kind))
        sys.exit(1)
    for line in describe_choice(best, w, budget, hb, "best"):
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
                "mem": c.prediction.device_peak_bytes,
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
    check_results_dir(ta.out or Path(ta.results_dir) / "lookup", "out")  # before the minute
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
    print(f"lookup: {csv}\n        {md}\n        {csv.with_suffix('.json')}\n"
          f"        {csv.parent / 'index.html'}")

"""Figures from the results table (matplotlib, Agg). Axes in MiB (binary, stated); failed
points (oom / timeout / crashed / error) are drawn as red crosses, never dropped."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sam2tune.analysis.table import DEVICE_PEAK, prepare
from sam2tune.paths import report_path
from sam2tune.units import GiB, MiB

__all__ = ["FIGURES", "make_figure", "pareto_front", "fig_png", "new_figure"]


def new_figure(figsize=(7, 4.2)):
    """A figure and its one axes, outside pyplot (no backend, no global state)."""
    fig = Figure(figsize=figsize, layout="tight")
    return fig, fig.subplots()


def fig_png(fig: Figure, dpi: int = 110) -> bytes:
    """``fig`` as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _legend(ax: Any, **kw: Any) -> None:
    """A legend when something drawn has a label (matplotlib warns otherwise, e.g. when every
    point failed)."""
    if ax.get_legend_handles_labels()[1]:
        ax.legend(**kw)


def _failed_marks(ax, df: pd.DataFrame, x: str) -> None:
    bad = df[df["status"] != "ok"]
    if bad.empty:
        return
    ymin = ax.get_ylim()[0]
    ax.scatter(
        bad[x],
        [ymin] * len(bad),
        marker="x",
        color="red",
        s=60,
        zorder=5,
        label=f"failed ({', '.join(sorted(set(bad['status'])))})",
    )


def _provenance(df: pd.DataFrame) -> str:
    kinds = sorted(set(df["device_peak_kind"].dropna()))
    dev = sorted(set(df["device"].dropna().astype(str)))
    w = sorted(set(df["weights"].dropna().astype(str)))
    w = ["random-init" if x == "random-init" else x[:19] for x in w]
    return f"device {'/'.join(dev)}; weights {', '.join(w)}; device peak {' / '.join(kinds)}"


def peak_vs_frames(df: pd.DataFrame):
    """Peak accelerator memory against video length, per setting and size, with a linear fit."""
    fig, ax = new_figure()
    ok = df[df["status"] == "ok"]
    for (setting, size), g in ok.groupby(["setting", "image_size"]):
        g = g.sort_values("num_frames")
        y = g[DEVICE_PEAK] / MiB
        ax.plot(g["num_frames"], y, "o", label=f"{setting} @ {int(size)} px")
        if g["num_frames"].nunique() >= 2:
            k, b = np.polyfit(g["num_frames"].astype(float), y.astype(float), 1)
            xs = np.linspace(g["num_frames"].min(), g["num_frames"].max(), 10)
            ax.plot(xs, k * xs + b, "-", alpha=0.5, color=ax.lines[-1].get_color())
    _failed_marks(ax, df, "num_frames")
    ax.set_xlabel("video length (frames)")
    ax.set_ylabel("peak accelerator memory (MiB)")
    ax.set_title("Peak accelerator memory vs video length (lines: least-squares fit)")
    _legend(ax, fontsize=7)
    fig.text(0.01, 0.01, _provenance(df), fontsize=6, color="gray")
    return fig


def memory_by_role(df: pd.DataFrame):
    """Stacked bars of each successful run's accelerator bytes by role."""
    ok = df[df["status"] == "ok"].sort_values(["setting", "num_frames"])
    fig, ax = new_figure()
    if ok.empty:
        ax.text(0.5, 0.5, "no successful runs", ha="center", va="center", transform=ax.transAxes)
        return fig
    labels = [f"{r.setting}\n{int(r.num_frames)}f" for r in ok.itertuples()]
    on_dev_frames = np.where(ok["offload_video_to_cpu"] == True, 0, ok["frames_bytes"])  # noqa: E712
    on_dev_state = np.where(ok["offload_state_to_cpu"] == True, 0, ok["state_bytes"])  # noqa: E712
    parts = {
        "weights": ok["weights_bytes"],
        "frames": on_dev_frames,
        "state": on_dev_state,
        "cached features": ok["cached_features_bytes"],
        "step activations": ok["activation_peak_bytes"],
    }
    bottom = np.zeros(len(ok))
    x = np.arange(len(ok))
    for name, v in parts.items():
        v = np.asarray(pd.to_numeric(pd.Series(v), errors="coerce").fillna(0), float) / MiB
        ax.bar(x, v, bottom=bottom, label=name)
        bottom += v
    ax.set_xticks(x, labels, fontsize=6, rotation=60)
    ax.set_ylabel("accelerator memory (MiB)")
    ax.set_title("Where the accelerator's bytes go (offloaded roles live in host RAM)")
    _legend(ax, fontsize=7)
    return fig


def fps_by_setting(df: pd.DataFrame):
    """Median propagation fps by setting and object count."""
    fig, ax = new_figure()
    ok = df[(df["status"] == "ok") & df["fps"].notna()]
    g = ok.groupby(["setting", "num_objects"])["fps"].median().unstack("num_objects")
    if g.empty:
        ax.text(0.5, 0.5, "no fps figures", ha="center", va="center", transform=ax.transAxes)
        return fig
    g.plot.bar(ax=ax)
    ax.set_ylabel("propagation fps (median over runs)")
    ax.set_xlabel("")
    ax.set_title("Speed by setting and object count")
    _legend(ax, title="objects", fontsize=7)
    ax.tick_params(axis="x", labelsize=7, labelrotation=30)
    return fig


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated by another (less ``x`` and at least as much ``y``)."""
    p = points.sort_values([x, y], ascending=[True, False])
    best, keep = -np.inf, []
    for idx, r in p.iterrows():
        if r[y] > best:
            keep.append(idx)
            best = r[y]
    return p.loc[keep]


def quality_vs_memory(df: pd.DataFrame):
    """Agreement with the reference against peak accelerator memory, with the Pareto front."""
    fig, ax = new_figure()
    ok = df[(df["status"] == "ok") & df["iou_ref_mean"].notna()]
    random_init = (df["weights"] == "random-init").any()
    for s, g in ok.groupby("setting"):
        ax.scatter(g[DEVICE_PEAK] / MiB, g["iou_ref_mean"], label=s, s=25)
    if not ok.empty:
        front = pareto_front(ok, DEVICE_PEAK, "iou_ref_mean")
        ax.plot(front[DEVICE_PEAK] / MiB, front["iou_ref_mean"], "k--", lw=1, label="Pareto front")
    ax.set_xlabel("peak accelerator memory (MiB)")
    ylab = "agreement with reference (mean IoU)"
    ax.set_ylabel(ylab + (" [random-init: not accuracy]" if random_init else ""))
    ax.set_title("Mask agreement vs memory")
    if ok.empty:
        ax.text(
            0.5,
            0.5,
            "no agreement figures (probe.reference=false)",
            ha="center",
            transform=ax.transAxes,
        )
    else:
        _legend(ax, fontsize=7)
    fig.text(0.01, 0.01, _provenance(df), fontsize=6, color="gray")
    return fig


def timeline(df: pd.DataFrame, results_dir: str | Path):
    """Per-frame memory of the longest successful run."""
    fig, ax = new_figure()
    ok = df[df["status"] == "ok"].sort_values(["num_frames", "run_id"])
    if ok.empty:
        ax.text(0.5, 0.5, "no successful runs", ha="center", va="center", transform=ax.transAxes)
        return fig
    r = ok.iloc[-1]
    rep = json.loads(report_path(results_dir, r["run_id"]).read_text())
    tl = pd.DataFrame(rep["timeline"])
    for col, name in [
        ("device_resident_bytes", "device-resident state (census)"),
        ("state_bytes", "per-object state"),
        ("frames_bytes", "frame cache"),
    ]:
        ax.plot(tl["frame"], tl[col] / MiB, label=name)
    ax2 = ax.twinx()
    ax2.plot(tl["frame"], tl["host_rss_bytes"] / MiB, "k:", label="host RSS (right)")
    ax2.set_ylabel("host RSS (MiB)")
    ax.set_xlabel("frame")
    ax.set_ylabel("bytes by role (MiB)")
    ax.set_title(
        f"Per-frame timeline of run {r['run_id']} ({r['setting']}, {int(r['num_frames'])} frames)"
    )
    _legend(ax, fontsize=7, loc="upper left")
    _legend(ax2, fontsize=7, loc="lower right")
    return fig


def timeline_by_setting(df: pd.DataFrame, results_dir: str | Path):
    """Each setting's longest successful run frame by frame: device-resident state (census,
    top) and host RSS (measured, bottom), so growth and flatness over a long video are seen
    side by side."""
    fig = Figure(figsize=(7, 5.6), layout="tight")
    top, bottom = fig.subplots(2, 1, sharex=True)
    ok = df[df["status"] == "ok"].sort_values(["num_frames", "run_id"])
    for setting, g in ok.groupby("setting", sort=True):
        r = g.iloc[-1]
        rep = json.loads(report_path(results_dir, r["run_id"]).read_text())
        tl = pd.DataFrame(rep["timeline"])
        if tl.empty:
            continue
        label = f"{setting} ({int(r['num_frames'])} frames)"
        top.plot(tl["frame"], tl["device_resident_bytes"] / MiB, lw=1.5, label=label)
        bottom.plot(tl["frame"], tl["host_rss_bytes"] / MiB, lw=1.5, label=label)
    top.set_ylabel("device-resident state\n(MiB, census)")
    bottom.set_ylabel("host RSS (MiB, measured)")
    bottom.set_xlabel("frame")
    top.set_ylim(bottom=0)
    top.set_title("Frame by frame, each setting's longest run")
    _legend(top, fontsize=7)
    fig.text(0.01, 0.0, _provenance(df), fontsize=6, color="gray")
    return fig


def quality_over_time(df: pd.DataFrame, results_dir: str | Path):
    """J&F per frame along the video, one line per setting (its longest successful run): vs
    the reference (agreement) where recorded, else vs ground truth; segment boundaries marked."""
    fig, ax = new_figure()
    ok = df[df["status"] == "ok"].sort_values(["num_frames", "run_id"])
    drawn = 0
    for setting, g in ok.groupby("setting", sort=True):
        r = g.iloc[-1]
        rep = json.loads(report_path(results_dir, r["run_id"]).read_text())
        q = rep.get("quality_per_frame") or {}
        series, what = (q.get("jf_ref"), "vs reference") if q.get("jf_ref") else (
            q.get("jf_gt"), "vs ground truth"
        )
        if not series:
            continue
        t = sorted(int(k) for k in series)
        line = ax.plot(t, [series[str(k)] for k in t], label=f"{setting} ({what})")[0]
        seg = int(r.get("segment_frames") or 0)
        for b in range(seg, int(r["num_frames"]), seg) if seg else []:
            ax.axvline(b, color=line.get_color(), ls=":", lw=0.8)
        drawn += 1
    if not drawn:
        ax.text(
            0.5, 0.5, "no per-frame J&F recorded", ha="center", va="center",
            transform=ax.transAxes,
        )
    ax.set_xlabel("frame")
    ax.set_ylabel("J&F (mean over objects)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Quality along the video per setting (dotted: segment boundaries)")
    if drawn:
        _legend(ax, fontsize=7)
    return fig


def growth_vs_flat(df: pd.DataFrame):
    """The headline: peak accelerator memory beyond the weights against video length, one line
    per setting, its slope in the legend: stock grows with every frame, stream stays flat."""
    fig, ax = new_figure()
    ok = df[df["status"] == "ok"]
    drawn = 0
    for setting, g in ok.groupby("setting", sort=True):
        g = g.groupby("num_frames", as_index=False)[[DEVICE_PEAK, "weights_bytes"]].median()
        y = (g[DEVICE_PEAK] - g["weights_bytes"]) / MiB
        if len(g) >= 2:
            k = np.polyfit(g["num_frames"].astype(float), y.astype(float) * MiB, 1)[0]
            label = f"{setting}: {k / 2**10:+,.0f} KiB per frame"
        else:
            label = f"{setting}: one length only"
        ax.plot(g["num_frames"], y, "o-", lw=2.5, ms=7, label=label)
        drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no successful runs", ha="center", va="center", transform=ax.transAxes)
    _failed_marks(ax, df, "num_frames")
    ax.set_xlabel("video length (frames)")
    ax.set_ylabel("peak accelerator memory beyond the weights (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title("Stock grows with every frame; stream stays flat")
    if drawn:
        _legend(ax, fontsize=8, title="setting: slope (least squares)", title_fontsize=7)
    fig.text(0.01, 0.01, _provenance(df), fontsize=6, color="gray")
    return fig


def projection_1024(df: pd.DataFrame):
    """Predicted peak GPU memory of each setting at 1024 px over 15 s - 2 min at 30 fps (the
    memory model), beside the usable memory of common GPUs."""
    from sam2tune.analysis.projection import FPS, SIZE, gpu_lines, project
    from sam2tune.memory_model.memory import MemoryModel

    fig, ax = new_figure((7, 4.6))
    model = MemoryModel.load()
    p = project(df, model)
    if p.empty:
        ax.text(0.5, 0.5, "no successful runs", ha="center", va="center", transform=ax.transAxes)
        return fig
    groups = list(p.groupby("setting", sort=True))
    tab20 = matplotlib.colormaps["tab20"]
    colors = [tab20(i) for i in range(20)] if len(groups) > 10 else None
    for i, (setting, g) in enumerate(groups):
        ax.plot(
            g["seconds"] / 60,
            g["device_peak_bytes"] / GiB,
            "o" + ("--" if str(setting).startswith("transformers") else "-"),
            lw=2,
            ms=4,
            label=setting,
            color=colors[i % len(colors)] if colors else None,
        )
    top = p["device_peak_bytes"].max() / GiB
    for name, total, usable in gpu_lines(model):
        if usable / GiB > 1.6 * top:
            continue
        ax.axhline(usable / GiB, color="gray", ls="--", lw=0.8)
        ax.text(2.0, usable / GiB, f" {name} ({total / 1e9:.0f} GB)", fontsize=7, va="center",
                color="gray")
    ax.set_xlim(0, 2.45)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"video length (minutes at {FPS} fps)")
    ax.set_ylabel("peak GPU memory (GiB), PREDICTED")
    ax.set_title(
        f"Predicted at {SIZE} px, {int(p['num_objects'].iloc[0])} objects: what each setting needs"
    )
    _legend(ax, fontsize=8 if len(groups) <= 10 else 6, loc="upper left")
    fig.text(
        0.01,
        0.01,
        f"predicted by the memory model ({p['coefficients'].iloc[0]} coefficients, "
        "conf/memory_model.json), not measured; dashed: usable GPU memory (total - CUDA context, "
        "/ allocator headroom)",
        fontsize=6,
        color="gray",
    )
    return fig


FIGURES = {
    "growth_vs_flat": growth_vs_flat,
    "projection_1024": projection_1024,
    "peak_vs_frames": peak_vs_frames,
    "memory_by_role": memory_by_role,
    "quality_vs_memory": quality_vs_memory,
    "fps_by_setting": fps_by_setting,
    "timeline": timeline,
    "timeline_by_setting": timeline_by_setting,
    "quality_over_time": quality_over_time,
}

#: figures that also read the runs' reports
_READ_REPORTS = {"timeline", "timeline_by_setting", "quality_over_time"}


def make_figure(name: str, df: pd.DataFrame, results_dir: str | Path):
    """Figure ``name`` (a key of :data:`FIGURES`) of the results table ``df``."""
    df = prepare(df) if "setting" not in df else df
    fn: Any = FIGURES[name]
    return fn(df, results_dir) if name in _READ_REPORTS else fn(df)

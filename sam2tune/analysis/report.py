"""``sam2tune report``: a self-contained HTML file (figures embedded) and a Markdown file with the
same content, plus the figures as PNG and the table as CSV / Parquet."""

from __future__ import annotations

import base64
import html
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sam2tune.analysis.conclusions import all_conclusions
from sam2tune.analysis.plots import FIGURES, fig_png, make_figure
from sam2tune.analysis.table import DEVICE_PEAK, prepare
from sam2tune.paths import atomic_write_text
from sam2tune.results import iter_reports, load_results
from sam2tune.units import MiB

__all__ = ["build_report", "export_table"]

_TABLE = [
    ("run_id", "run"),
    ("status", "status"),
    ("setting", "setting"),
    ("image_size", "px"),
    ("num_frames", "frames"),
    ("num_objects", "objects"),
    ("num_cond_frames", "cond"),
    (DEVICE_PEAK, "device peak MiB"),
    ("device_peak_kind", "peak is"),
    ("peak_host_rss_bytes", "host RSS MiB"),
    ("fps", "fps"),
    ("iou_ref_mean", "agreement"),
    ("iou_gt_mean", "IoU vs GT"),
]


def _table(df: pd.DataFrame) -> pd.DataFrame:
    t = pd.DataFrame({label: df[col] for col, label in _TABLE})
    for c in ("device peak MiB", "host RSS MiB"):
        t[c] = (pd.to_numeric(t[c], errors="coerce") / MiB).round(1)
    for c in ("fps", "agreement", "IoU vs GT"):
        t[c] = pd.to_numeric(t[c], errors="coerce").round(3)
    return t


def _md_table(t: pd.DataFrame) -> str:
    head = "| " + " | ".join(t.columns) + " |\n|" + "---|" * len(t.columns) + "\n"
    rows = [
        "| " + " | ".join("" if pd.isna(v) else str(v) for v in r) + " |"
        for r in t.itertuples(index=False)
    ]
    return head + "\n".join(rows)


def _environment(results_dir: Path, df: pd.DataFrame) -> list[tuple[str, str]]:
    envs = []
    for p in iter_reports(results_dir)[-50:]:
        try:
            envs.append(json.loads(p.read_text()).get("environment") or {})
        except (OSError, ValueError):
            continue

    def vals(key: str) -> str:
        return (
            ", ".join(sorted({str(e.get(key)) for e in envs if e.get(key) is not None})) or "n/a"
        )

    weights = sorted(set(df["weights"].dropna().astype(str)))
    return [
        (
            "devices",
            ", ".join(sorted(set(df["device"].dropna().astype(str))))
            + f" ({vals('device_name')})",
        ),
        ("driver", vals("driver")),
        (
            "weights",
            ", ".join(weights)
            + (
                " — random-init: memory and speed are faithful, masks are not"
                if "random-init" in weights
                else ""
            ),
        ),
        (
            "versions",
            f"sam2tune {vals('sam2tune')}, torch {vals('torch')}, sam2 {vals('sam2')}, "
            f"python {vals('python')}",
        ),
        ("git commit", vals("git_commit")),
        ("CPU", vals("cpu")),
        (
            "memory figures",
            "device peak = CUDA max allocated (measured) where a GPU ran, else the "
            "census+tracked-activations estimate; host RSS measured (VmHWM)",
        ),
        ("units", "MiB = 2^20 bytes, GiB = 2^30 bytes"),
    ]


def _lookup_pivot(results_dir: Path) -> tuple[str, pd.DataFrame] | None:
    """The lookup table (``results_dir/lookup``, or ``results/lookup`` beside a study's folder),
    pivoted: GPU x video length at 1024 px, 3 objects."""
    p = next(
        (
            d / "lookup" / "gpu_lookup.json"
            for d in (results_dir, results_dir.parent)
            if (d / "lookup" / "gpu_lookup.json").is_file()
        ),
        None,
    )
    if p is None:
        return None
    d = json.loads(p.read_text())
    rows = pd.DataFrame(d["rows"])
    sel = rows[(rows["image_size"] == 1024) & (rows["num_objects"] == 3)]
    if sel.empty:
        return None
    piv = sel.pivot_table(
        index="gpu", columns="video", values="config", aggfunc="first", sort=False
    )
    piv = piv.reset_index()
    note = (
        f"Recommended configuration per GPU and video length for {rows['model'].iloc[0]} at "
        f"1024 px with 3 objects ({rows['figure'].iloc[0]}; host RAM "
        f"{d['host_budget_bytes'] / 2**30:.0f} GiB). Full table: lookup/gpu_lookup.md."
    )
    return note, piv


def export_table(df: pd.DataFrame, out: Path) -> None:
    """The results table as CSV and Parquet beside the report."""
    df.to_csv(out / "results.csv", index=False)
    try:
        df.to_parquet(out / "results.parquet", index=False)
    except Exception:
        pass


_SNAP_NOTE = (
    "PyTorch's allocator history (probe.memory_snapshot=true); open a file at "
    "https://pytorch.org/memory_viz (the file stays on your machine)."
)


def _snapshots(results_dir: Path, out: Path, df: pd.DataFrame) -> list[tuple[str, str]]:
    """(label, link relative to the report) for each run that wrote a CUDA memory snapshot."""
    found = []
    for r in df.to_dict("records"):
        f = results_dir / "runs" / str(r["run_id"]) / "memory_snapshot.pickle"
        if f.is_file():
            label = f"{r['run_id']}: {r['model']} {r['image_size']} px, {r['num_frames']} frames"
            found.append((label, os.path.relpath(f, out)))
    return found


@dataclass
class _Parts:
    """What both renderings of the report show."""

    title: str
    stamp: str
    results_dir: Path
    runs: int
    intro: str
    env: list[tuple[str, str]]
    concl: list[str]
    bad: list[dict[str, str]]
    figs: list[tuple[str, str]]
    snaps: list[tuple[str, str]]
    lookup: tuple[str, pd.DataFrame] | None
    table: pd.DataFrame

    @property
    def bad_lines(self) -> list[str]:
        """The unreadable records, one line each."""
        return [f"`{b['path']}`: {b['reason']}" for b in self.bad]


def _markdown(p: _Parts) -> list[str]:
    md = [f"# {p.title}", "", f"Generated {p.stamp} from `{p.results_dir}` ({p.runs} runs).", ""]
    if p.intro:
        md += [p.intro, ""]
    md += ["## Environment and provenance", ""] + [f"- **{k}**: {v}" for k, v in p.env]
    md += ["", "## Conclusions (computed from the data)", ""] + [f"- {c}" for c in p.concl]
    if p.bad_lines:
        md += ["", f"## Unreadable records ({len(p.bad)}, left out of every figure and table)", ""]
        md += [f"- {b}" for b in p.bad_lines]
    md += ["", "## Figures", ""] + [f"![{n}](figures/{n}.png)" for n, _ in p.figs]
    if p.snaps:
        md += ["", "## CUDA memory snapshots", "", _SNAP_NOTE, ""]
        md += [f"- [{label}]({href})" for label, href in p.snaps]
    if p.lookup is not None:
        md += ["", "## Per-GPU lookup (predicted)", "", p.lookup[0], "", _md_table(p.lookup[1])]
    md += [
        "",
        "## Runs",
        "",
        _md_table(p.table),
        "",
        "Full table: `results.csv` / `results.parquet` (schema: README, 'Results table schema').",
    ]
    return md


def _html(p: _Parts) -> str:
    e = html.escape
    body = [
        f"<h1>{e(p.title)}</h1>",
        f"<p>Generated {p.stamp} from <code>{e(str(p.results_dir))}</code> ({p.runs} runs).</p>",
    ]
    if p.intro:
        body.append(f"<p>{e(p.intro)}</p>")
    if p.bad_lines:
        body.append(f"<h2>Unreadable records ({len(p.bad)}, left out)</h2><ul>")
        body += [f"<li>{e(b)}</li>" for b in p.bad_lines]
        body.append("</ul>")
    body.append("<h2>Environment and provenance</h2><ul>")
    body += [f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in p.env]
    body.append("</ul><h2>Conclusions (computed from the data)</h2><ul>")
    body += [f"<li>{e(c)}</li>" for c in p.concl]
    body.append("</ul><h2>Figures</h2>")
    body += [
        f'<figure><img alt="{n}" src="data:image/png;base64,{b}">'
        f"<figcaption>{n}</figcaption></figure>"
        for n, b in p.figs
    ]
    if p.snaps:
        body.append(f"<h2>CUDA memory snapshots</h2><p>{e(_SNAP_NOTE)}</p><ul>")
        body += [f'<li><a href="{e(h)}">{e(label)}</a></li>' for label, h in p.snaps]
        body.append("</ul>")
    if p.lookup is not None:
        body.append(f"<h2>Per-GPU lookup (predicted)</h2><p>{e(p.lookup[0])}</p>")
        body.append(p.lookup[1].to_html(index=False, na_rep="", border=0, classes="runs"))
    body.append("<h2>Runs</h2>")
    body.append(p.table.to_html(index=False, na_rep="", border=0, classes="runs"))
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
        "img{max-width:100%}table.runs{border-collapse:collapse;font-size:12px}"
        "table.runs td,table.runs th{border:1px solid #ccc;padding:2px 6px}"
    )
    # after load, the page records how many figures the browser decoded (the tests check it in
    # headless Chromium)
    check = (
        "<script>window.addEventListener('load',function(){var i=[].slice.call("
        "document.images);document.body.setAttribute('data-images-loaded',i.filter("
        "function(x){return x.complete&&x.naturalWidth>0}).length+'/'+i.length)})</script>"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(p.title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}{check}</body></html>\n"
    )


def build_report(
    results_dir: str | Path,
    out: str | Path,
    title: str = "sam2tune report",
    figures: list[str] | None = None,
    conclusions: Callable[[pd.DataFrame], list[str]] | None = None,
    intro: str = "",
) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` (and ``figures/``, ``results.csv``) into ``out``.

    Returns:
        The HTML and Markdown paths.
    """
    results_dir, out = Path(results_dir), Path(out)
    import warnings

    from sam2tune.results import InvalidRecordWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InvalidRecordWarning)  # listed in the report instead
        raw = load_results(results_dir)
    if raw.empty:
        raise ValueError(f"results_dir: no recorded runs under {str(results_dir)!r}")
    df = prepare(raw)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figs: list[tuple[str, str]] = []
    for name in figures or list(FIGURES):
        png = fig_png(make_figure(name, df, results_dir))
        (out / "figures" / f"{name}.png").write_bytes(png)
        figs.append((name, base64.b64encode(png).decode()))
    concl = (conclusions or all_conclusions)(df)
    lookup = _lookup_pivot(results_dir)
    env = _environment(results_dir, df)
    table = _table(df)
    export_table(raw, out)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")

    bad = raw.attrs.get("invalid_records", [])
    snaps = _snapshots(results_dir, out, df)
    parts = _Parts(
        title, stamp, results_dir, len(df), intro, env, concl, bad, figs, snaps, lookup, table
    )
    md = _markdown(parts)
    md_path = out / "report.md"
    atomic_write_text(md_path, "\n".join(md) + "\n")

    page = _html(parts)
    html_path = out / "report.html"
    atomic_write_text(html_path, page)
    return html_path, md_path

"""Sweeps, reports and the notebook end to end: real multiruns (CPU, tiny, 256 px, 3 frames)."""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
from html.parser import HTMLParser

import pytest
from conftest import REPO, sam2tune_cmd
from PIL import Image

import sam2tune
from sam2tune.analysis.conclusions import frame_slopes
from sam2tune.analysis.table import prepare
from sam2tune.sweep import count_jobs
from sam2tune.units import MiB

SMALL = ["device=cpu", "video.height=64", "video.width=64", "video.num_objects=1"]


def _sweep(args, results, cache_root, timeout=600):
    cmd = sam2tune_cmd() + [
        "run",
        "-m",
        *SMALL,
        f"cache_dir={cache_root}",
        f"results_dir={results}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=results.parent)


@pytest.fixture(scope="module")
def swept(tmp_path_factory, cache_root):
    """One real 2x2 sweep, shared by the report tests."""
    results = tmp_path_factory.mktemp("sweep") / "r"
    p = _sweep(
        ["video.num_frames=3,6", "knobs.offload_video_to_cpu=false,true"], results, cache_root
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return results, p


@pytest.mark.slow
def test_multirun_records_every_point_with_progress_and_summary(swept):
    results, p = swept
    df = sam2tune.load_results(results)
    assert len(df) == 4 and set(df.status) == {"ok"}
    assert sorted(zip(df.num_frames, df.offload_video_to_cpu, strict=True)) == [
        (3, False),
        (3, True),
        (6, False),
        (6, True),
    ]
    assert "[sweep] 4 points" in p.stderr and "[sweep 4/4] ok" in p.stderr and "ETA" in p.stderr
    assert "sweep summary: 4 points: ok=4" in p.stderr
    assert df.config_hash.is_unique


class _Imgs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


@pytest.mark.slow
def test_report_html_and_markdown_with_computed_numbers(swept, tmp_path):
    results, _ = swept
    out = tmp_path / "rep"
    p = subprocess.run(
        sam2tune_cmd() + ["report", f"results_dir={results}", f"out={out}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    parser = _Imgs()
    parser.feed(html)
    assert len(parser.srcs) >= 5
    for src in parser.srcs:  # every figure is embedded and is a real PNG
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    assert "random-init" in html and "random-init" in md
    assert "not accuracy" in md or "no figure here measures segmentation accuracy" in md
    # the conclusion's number is the one computed from the table
    sl = frame_slopes(prepare(sam2tune.load_results(results)))
    stock = sl[sl.setting == "stock"].iloc[0].bytes_per_frame
    off = sl[sl.setting == "offload_video"].iloc[0].bytes_per_frame
    removed = f"{(stock - off) * 100 / MiB:.1f} MiB"
    assert f"offload_video removed {removed} of accelerator memory per 100 frames" in md
    assert removed in html
    assert len(re.findall(r"^\| 2026|^\| \d{8}-", md, re.M)) == 4  # one table row per run
    assert (out / "results.csv").read_text().count("\n") == 5
    for name in ("peak_vs_frames", "memory_by_role", "timeline"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000


@pytest.mark.slow
def test_resume_skips_done_points_unless_forced(swept, cache_root):
    results, _ = swept
    before = len(sam2tune.load_results(results))
    p = _sweep(["video.num_frames=3,6", "knobs.offload_video_to_cpu=false"], results, cache_root)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("skip: already recorded ok") == 2
    assert len(sam2tune.load_results(results)) == before
    p = _sweep(["video.num_frames=3", "force=true"], results, cache_root)
    assert p.returncode == 0 and len(sam2tune.load_results(results)) == before + 1


@pytest.mark.slow
def test_sweep_goes_on_past_an_oom_point(tmp_path, cache_root):
    results = tmp_path / "r"
    p = _sweep(
        ["video.num_frames=3", "limits.host_memory_budget=250MiB,null"], results, cache_root
    )
    assert p.returncode == 0, p.stderr[-2000:]
    st = sorted(sam2tune.load_results(results).status)
    assert st == ["ok", "oom"]
    assert "oom=1" in p.stderr


@pytest.mark.slow
def test_joblib_launcher_with_two_workers_loses_no_rows(tmp_path, cache_root):
    results = tmp_path / "r"
    p = _sweep(
        [
            "hydra/launcher=local_workers",
            "hydra.launcher.n_jobs=2",
            "video.num_frames=3,4",
            "video.seed=0,1",
        ],
        results,
        cache_root,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    df = sam2tune.load_results(results)
    assert len(df) == 4 and set(df.status) == {"ok"} and df.run_id.is_unique


def test_count_jobs_reads_command_line_and_presets():
    assert count_jobs(["a=1,2", "b=3", "c=x,y,z"], None) == 6
    assert count_jobs(["a=1,2"], {"a": "1,2,3", "d": "p,q"}) == 4  # command line wins
    assert count_jobs([], {"video.num_frames": "8,16,32"}) == 3


def test_sweep_presets_and_studies_exist():
    from sam2tune.cli import load_study, studies

    assert {
        "demo",
        "memory_vs_length",
        "object_count",
        "cond_frames",
        "resolution",
        "bounded_memory",
    } <= set(studies())
    for name in studies():
        mod = load_study(name)
        assert mod.SWEEP and mod.TITLE and callable(mod.conclusions)


def test_report_on_an_empty_dir_is_a_clear_error(tmp_path):
    p = subprocess.run(
        sam2tune_cmd() + ["report", f"results_dir={tmp_path}"], capture_output=True, text=True
    )
    assert p.returncode == 2 and "sam2tune: error: results_dir: no recorded runs" in p.stderr


@pytest.mark.slow
def test_notebook_executes_against_a_real_results_table(swept):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    results, _ = swept
    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    os.environ["SAM2TUNE_RESULTS"] = str(results)
    try:
        nbclient.NotebookClient(
            nb,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(REPO / "notebooks")}},
        ).execute()
    finally:
        del os.environ["SAM2TUNE_RESULTS"]
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    n = len(sam2tune.load_results(results))  # the resume test may have added a forced run
    assert f"{n} runs" in outputs and "removed" in outputs
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 4


@pytest.mark.slow
def test_report_renders_in_headless_chromium(swept, tmp_path):
    import shutil
    import tempfile

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    results, _ = swept
    out = tmp_path / "rep"
    p = subprocess.run(sam2tune_cmd() + ["report", f"results_dir={results}", f"out={out}"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tempfile.mkdtemp()}", "--virtual-time-budget=5000"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", (out / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded, dom[-500:]
    assert loaded.group(1) == loaded.group(2) and int(loaded.group(2)) >= 5  # every figure decoded
    assert "Conclusions (computed from the data)" in dom and "random-init" in dom


@pytest.mark.parametrize("launcher,target", [
    ("local_workers", "JoblibLauncher"), ("slurm", "SlurmLauncher")])
def test_scale_out_launcher_configs_compose(launcher, target):
    p = subprocess.run(sam2tune_cmd() + ["run", f"hydra/launcher={launcher}", "--cfg", "hydra"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert target in p.stdout


def test_a_host_slope_from_two_lengths_is_not_stated_as_a_finding():
    import pandas as pd

    from sam2tune.analysis.conclusions import length_conclusions

    rows = [
        dict(status="ok", image_size=256, num_objects=1, setting="stock", num_frames=n,
             device_peak_bytes=1000 * n, peak_host_rss_bytes=5000 * n + 7,
             device_peak_kind="estimated")
        for n in (6, 12)
    ]
    text = " ".join(length_conclusions(pd.DataFrame(rows)))
    assert "not enough data (2 lengths" in text and "host RSS 0." not in text
    rows.append({**rows[0], "num_frames": 24, "device_peak_bytes": 24000,
                 "peak_host_rss_bytes": 5000 * 24 + 7})
    text = " ".join(length_conclusions(pd.DataFrame(rows)))
    assert "not enough data" not in text and "MiB per 100 frames, measured" in text


@pytest.mark.slow
def test_the_report_lists_unreadable_records(swept, tmp_path):
    import shutil

    from sam2tune.analysis.report import build_report

    results, _ = swept
    res = tmp_path / "r"
    runs = sorted((results / "runs").iterdir())
    shutil.copytree(runs[0], res / "runs" / runs[0].name)
    bad = res / "runs" / "20990101-000000-deadbeef"
    bad.mkdir()
    (bad / "report.json").write_text('{"row": {"status": "ok"')  # truncated
    _, md = build_report(res, tmp_path / "out")
    text = md.read_text()
    assert "Unreadable records (1" in text and str(bad / "report.json") in text

"""The demo's story: the measured growth-vs-flat figure and the projection to 1024 px and
1-2 minutes (predicted by the memory model, labelled so), on the committed demo's real records."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sam2tune.analysis.plots import make_figure
from sam2tune.analysis.projection import FPS, SIZE, project, projection_conclusions
from sam2tune.analysis.table import prepare
from sam2tune.results import load_results
from sam2tune.units import MiB

DEMO = Path(__file__).resolve().parents[1] / "results" / "cpu-demo"


@pytest.fixture(scope="module")
def df():
    return prepare(load_results(DEMO, cache=False))


def test_projection_grows_for_stock_by_sam2s_frame_sizes_and_stays_flat_for_stream(df):
    p = project(df)
    assert set(p["setting"]) == set(df[df["status"] == "ok"]["setting"])
    at = {(r.setting, r.seconds): r.device_peak_bytes for r in p.itertuples()}
    frame = 3 * SIZE * SIZE * 4  # SAM 2's float32 frame cache entry at 1024 px: 12 MiB
    stock = at[("stock", 120)] - at[("stock", 60)]
    assert stock >= 60 * FPS * frame  # at least every added frame's cache entry
    stream = at[("stream", 120)] - at[("stream", 60)]
    assert abs(stream) < 8 * MiB
    assert at[("stream", 120)] < at[("stock", 120)] / 10


def test_projection_sentences_say_predicted_and_name_the_gpu(df):
    lines = projection_conclusions(df)
    assert len(lines) == df[df["status"] == "ok"]["setting"].nunique()
    for line in lines:
        assert line.startswith("Predicted") and "not measured" in line
        assert re.search(r"1 min: [\d.]+ GiB .*2 min: [\d.]+ GiB", line)
    stream = next(x for x in lines if ", stream:" in x)
    assert "smallest catalog GPU it fits: RTX 3070" in stream  # the smallest in conf/gpus.yaml


def test_headline_figure_shows_stock_growing_and_stream_flat(df):
    fig = make_figure("growth_vs_flat", df, DEMO)
    # per frame, stock adds a frame-cache entry (3 x 256^2 x 4 B = 768 KiB) and per-object state
    labels = fig.axes[0].get_legend_handles_labels()[1]
    slope = {
        lab.split(":")[0]: float(re.search(r"([+-][\d,]+) KiB", lab).group(1).replace(",", ""))
        for lab in labels
    }
    assert slope["stock"] > 768
    assert abs(slope["stream"]) < 0.05 * slope["stock"]


def test_projection_figure_is_labelled_predicted(df):
    fig = make_figure("projection_1024", df, DEMO)
    ax = fig.axes[0]
    assert "PREDICTED" in ax.get_ylabel()
    assert any("not measured" in t.get_text() for t in fig.texts)
    assert len(ax.get_legend_handles_labels()[1]) == df[df["status"] == "ok"]["setting"].nunique()

"""The lookup page: one self-contained file, driven in headless Chromium, answering as the CLI."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from urllib.parse import quote

import pytest
from conftest import sam2tune_cmd

CHOICE = {"gpu": "RTX 4090", "video": "1 min", "num_objects": "3", "image_size": "1024",
          "prompt_every": "30"}


@pytest.mark.slow
def test_lookup_page_answers_as_sam2tune_recommend(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/install installs it as root)")
    out = tmp_path / "lk"
    p = subprocess.run(sam2tune_cmd() + ["lookup", f"out={out}", f"results_dir={tmp_path}"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    page = (out / "index.html").read_text()
    # self-contained: nothing loaded from anywhere else
    assert not re.search(r'<(script|link|img)[^>]+(src|href)=', page)
    frag = "&".join(f"{k}={quote(v)}" for k, v in CHOICE.items())
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tempfile.mkdtemp()}", "--virtual-time-budget=3000"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", (out / "index.html").as_uri() + "#" + frag],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-ready="1"' in dom, dom[-800:]

    def field(name: str) -> str:
        m = re.search(rf'id="{name}"[^>]*>(.*?)</', dom, re.S)
        assert m, name
        return html.unescape(m.group(1)).strip()

    # the CLI, screening the knob space itself (no lookup file): the same workload and budget
    rec = subprocess.run(
        sam2tune_cmd() + ["recommend", f"gpu={CHOICE['gpu']}", "workload.num_frames=1800",
                          "workload.num_objects=3", "workload.image_size=1024",
                          "workload.prompt_every=30", "host_budget=64GiB",
                          f"results_dir={tmp_path}"],  # no tmp_path/lookup: it screens
        capture_output=True, text=True, timeout=300)
    assert rec.returncode == 0, rec.stderr
    chosen = re.search(r"chosen: (.*)", rec.stdout).group(1).strip()
    peak = re.search(r"predicted accelerator peak (.*?), margin (.*?) \[predicted\]", rec.stdout)
    host = re.search(r"predicted host peak (.*?) of", rec.stdout).group(1)
    assert field("config") == chosen
    assert field("device_peak") == peak.group(1)
    assert field("margin") == peak.group(2)
    assert field("host_peak") == host
    assert field("trust") == re.search(r"  trust: (.*)", rec.stdout).group(1).strip()
    assert "sam2tune" in field("snippet") or "build_sam2_video_predictor" in field("snippet")


@pytest.mark.slow
def test_the_committed_lookup_is_what_the_shipped_models_answer_now(monkeypatch):
    """results/lookup (what the README tells users to open) is regenerated whenever the memory
    or speed model, the trust note or the ranking changes: one GPU's rows computed now, with
    the shipped models, equal the committed rows of that GPU field by field (a stale table said
    "inside the calibrated region" where recommend no longer did, and other fps)."""
    import json
    from pathlib import Path

    from sam2tune.config.presets import model_preset
    from sam2tune.gpus import catalog
    from sam2tune.memory_model.memory import MemoryModel
    from sam2tune.tune import recommend as rec
    from sam2tune.tune.args import recorded_runs
    from sam2tune.tune.space import impls_of

    committed = json.loads(Path("results/lookup/gpu_lookup.json").read_text())
    gpu = "RTX 4090"
    monkeypatch.setattr(rec, "catalog", lambda: {gpu: catalog()[gpu]})
    preset = model_preset("sam2.1_large")
    rows = rec.lookup_table(MemoryModel.load(), preset.name, preset.weights_bytes,
                            committed["host_budget_bytes"], "cuda", recorded_runs("results"),
                            impls_of("any"))
    old = [r for r in committed["rows"] if r["gpu"] == gpu]
    assert len(rows) == len(old) > 0
    for new, was in zip(rows, old, strict=True):
        for key in ("config", "trust", "speed_provenance", "predicted_device_peak_bytes",
                    "snippet"):
            assert new[key] == was[key], (key, new["video"], new["num_objects"], new[key])
        for key in ("predicted_fps", "predicted_end_to_end_s"):
            assert new[key] == pytest.approx(was[key], rel=1e-9), key

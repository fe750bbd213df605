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
                          f"lookup={tmp_path}/none.json", f"results_dir={tmp_path}"],
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

"""sam2tune installs like a library: the wheel carries its configs, GPU catalog, memory model and
studies, and runs its main commands from an empty folder outside the repository. Also: every
path and image the README names is in the repository."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """The wheel built from this checkout, installed (no dependencies) into a fresh virtual
    environment whose dependencies come from the running one (torch, sam2, ... after the wheel's
    own site-packages)."""
    t = tmp_path_factory.mktemp("wheel")
    p = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(t / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    whl = next((t / "dist").glob("sam2tune-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(t / "v")], check=True, timeout=300)
    vpy = t / "v" / "bin" / "python"
    p = subprocess.run([str(vpy), "-m", "pip", "install", "-q", "--no-deps", str(whl)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    vsite = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()"
                            "['purelib'])"], capture_output=True, text=True).stdout.strip()
    (Path(vsite) / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    empty = t / "empty"
    empty.mkdir()
    return whl, t / "v" / "bin" / "sam2tune", vpy, Path(vsite), empty


@pytest.mark.slow
def test_the_wheel_carries_configs_catalog_model_and_studies(wheel_env):
    whl = wheel_env[0]
    names = set(zipfile.ZipFile(whl).namelist())
    for need in ("sam2tune/_data/conf/run.yaml", "sam2tune/_data/conf/gpus.yaml",
                 "sam2tune/_data/conf/memory_model.json", "sam2tune/_data/conf/speed.yaml",
                 "sam2tune/_data/conf/model/sam2.1_tiny.yaml",
                 "sam2tune/_data/experiments/demo.py"):
        assert need in names, need


@pytest.mark.slow
def test_the_installed_wheel_runs_from_an_empty_folder(wheel_env, tmp_path):
    _, exe, vpy, vsite, empty = wheel_env

    def run(*args: str, timeout: int = 600) -> str:
        p = subprocess.run([str(exe), *args], cwd=empty, capture_output=True, text=True,
                           timeout=timeout)
        assert p.returncode == 0, (args, p.stderr[-2000:])
        return p.stdout

    where = subprocess.run([str(vpy), "-c", "import sam2tune, os; print(sam2tune.__file__)"],
                           cwd=empty, capture_output=True, text=True).stdout
    assert where.startswith(str(vsite)), where  # the installed copy, not the checkout
    assert re.fullmatch(r"sam2tune \d+\.\d+\.\d+\s*", run("--version"))
    out = run("run", "model=sam2.1_tiny", "model.image_size=256", "device=cpu",
              "video.num_frames=4", f"results_dir={tmp_path / 'r'}")
    assert "status=ok" in out
    assert "accelerator (cuda) peak" in run("predict", "model.image_size=512",
                                            "video.num_frames=100", "device_kind=cuda")
    rec = run("recommend", "gpu=RTX 4090", "workload.model=sam2.1_tiny",
              "workload.num_frames=900", f"results_dir={tmp_path / 'r'}")
    assert "sam2tune.build_predictor(" in rec
    assert "demo" in run("study", "--help")


def test_download_help_tells_the_truth():
    from conftest import sam2tune_cmd

    p = subprocess.run(sam2tune_cmd() + ["download", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "cache_dir=DIR" in p.stdout and "all=true" in p.stdout
    bad = subprocess.run(sam2tune_cmd() + ["download", "cache_dr=/tmp/x"], capture_output=True,
                         text=True)
    assert bad.returncode == 2
    assert "download: cache_dr: unknown argument (did you mean cache_dir?)" in bad.stderr


def test_every_path_and_image_the_readme_names_exists():
    text = (ROOT / "README.md").read_text()
    named = set(re.findall(r"\]\(([^)#:]+)\)", text)) | set(re.findall(r"`(results/[^` ]+)`", text))
    named = {p for p in named if not re.search(r"[<>*{}]|NAME|DIR|/runs/|^results/tune/", p)}
    assert named, "the README names no path"
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, missing


def test_download_reads_every_spelling_of_its_arguments(tmp_path):
    """key=value, bare model names, and the older --all / --cache-dir DIR read alike (no network
    here: each fails at the fetch, naming the folder it would have written to)."""
    from conftest import sam2tune_cmd

    for args in (["sam2.1_tiny", f"cache_dir={tmp_path}"], ["sam2.1_tiny", "--cache-dir", str(tmp_path)],
                 ["models=[sam2.1_tiny]", f"cache_dir={tmp_path}"]):
        p = subprocess.run(sam2tune_cmd() + ["download", *args], capture_output=True, text=True,
                           timeout=120)
        assert f"-> {tmp_path}/checkpoints" in p.stderr, (args, p.stderr)
        assert "unknown model" not in p.stderr

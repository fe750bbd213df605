"""Packages ``conf/`` and ``experiments/`` into the wheel as ``sam2tune/_data/`` (package data
read through importlib.resources; see sam2tune/resources.py). Everything else is in
pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithData(build_py):
    """build_py, plus the repository's conf/ and experiments/ under sam2tune/_data/ (an
    editable install reads them in place instead)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in ("conf", "experiments"):
            dst = Path(self.build_lib) / "sam2tune" / "_data" / name
            shutil.copytree(
                Path(__file__).parent / name, dst, dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )


setup(cmdclass={"build_py": BuildPyWithData})

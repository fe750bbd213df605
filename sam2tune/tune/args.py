"""Typed arguments of the memory model's and the tuner's commands (predict, fit, calibrate,
tune, recommend, lookup) and the inputs they share: the model file, the workload, the host
budget, the recorded runs."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import psutil

from sam2tune.analysis.table import prepare
from sam2tune.config.args import arg
from sam2tune.config.presets import model_preset
from sam2tune.config.schema import KnobsConfig, ModelConfig, impl_refusal
from sam2tune.errors import InputError
from sam2tune.memory_model.memory import DEFAULT_MODEL_PATH, MemoryModel, Workload
from sam2tune.results import InvalidRecordWarning, load_results
from sam2tune.tune.space import impls_of
from sam2tune.units import fmt_bytes, parse_bytes

__all__ = [
    "ModelArgs",
    "TuneArgs",
    "RecommendArgs",
    "LookupArgs",
    "PredictArgs",
    "FitArgs",
    "CalibrateArgs",
    "WORKLOAD_HELP",
    "load_model",
    "workload",
    "host_budget",
    "recorded_runs",
]


#: help of the workload's fields (``workload.<name>=``)
WORKLOAD_HELP = {
    "model": "model preset (sam2.1_tiny ... sam2.1_large, sam2_*)",
    "image_size": "input resolution S (multiple of 16)",
    "num_frames": "frames in the video (30 fps: 3600 = 2 minutes)",
    "num_objects": "objects tracked",
    "num_cond_frames": "prompted (conditioning) frames of each object",
    "prompt_every": "each object re-prompted every this many frames (0 = num_cond_frames)",
    "video_height": "the video's own height (output masks, decoding)",
    "video_width": "the video's own width",
    "first_frames": "the frame each object is first prompted on, e.g. [0,0,450] (null = all on 0)",
}


#: run keys that describe the workload, and what says the same in recommend's grammar
WORKLOAD_OF_RUN = {
    "model": "workload.model", "model.name": "workload.model",
    "model.image_size": "workload.image_size", "video.num_frames": "workload.num_frames",
    "video.num_objects": "workload.num_objects", "video.height": "workload.video_height",
    "video.width": "workload.video_width",
}


@dataclass
class ModelArgs:
    """What every model-backed answer needs: the budgets, the workload, the model file."""

    #: a run key given here is suggested in this grammar (``model=`` -> ``workload.model``)
    KEY_HINTS: ClassVar[dict[str, str]] = WORKLOAD_OF_RUN

    budget: str | None = arg(None, "accelerator budget, e.g. 24GiB (GPU memory)")
    gpu: str | None = arg(None, 'a catalog GPU instead of budget, e.g. "RTX 4090"')
    host_budget: str | None = arg(None, "host RAM budget, e.g. 64GiB (default: this machine's)")
    workload: Workload = arg(
        None,
        "the user's workload (workload.<field>=...)",
        factory=lambda: Workload(model="sam2.1_large", image_size=1024, num_frames=3600),
        fields=WORKLOAD_HELP,
    )
    device_kind: str = arg("cuda", "cuda | cpu: which coefficients and deductions apply")
    results_dir: str = arg("results", "recorded runs (scores, a fitted memory_model.json)")
    model_file: str | None = arg(None, "memory model JSON (default: results_dir's, else conf/)")
    impl: str = arg(
        "any",
        "any | sam2 | transformers: the implementations an answer may use (any: Meta's sam2 or "
        "transformers' Sam2VideoModel, whichever fits better)",
    )

    def validate(self) -> None:
        """One-line errors for values the type alone does not rule out."""
        if self.device_kind not in ("cuda", "cpu"):
            raise InputError(f"device_kind: must be cuda or cpu, got {self.device_kind!r}")
        self.gpu = _catalog_spelling(self.gpu)
        runs = Path(self.results_dir).expanduser()
        if runs.exists() and not runs.is_dir():
            raise InputError(f"results_dir: {self.results_dir}: is a file, not a folder of runs")
        impls_of(self.impl)
        why = impl_refusal(self.impl, KnobsConfig(), model_preset(self.workload.model))
        if self.impl == "transformers" and why is not None:
            raise InputError(f"impl: {why} (workload.model={self.workload.model})")


@dataclass
class TuneArgs(ModelArgs):
    """``sam2tune tune``: Optuna over the knob space, screened by the model."""

    n_trials: int = arg(60, "Optuna trials")
    confirm: int = arg(0, "confirm the best N with real short runs")
    confirm_frames: int = arg(8, "frames of each confirmation run")
    storage: str | None = arg(None, "Optuna storage URL (default: a journal file)")
    study_name: str | None = arg(None, "Optuna study name (default: from the workload)")

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

    lookup: str | None = arg(None, "lookup JSON (default results_dir/lookup/gpu_lookup.json)")
    format: str = arg("text", "text | json (overrides, predicted figures, reasons, snippet)")
    verify: int = arg(
        0,
        "run the answer's snippet on this machine for N frames (synthetic video) and print "
        "measured against predicted (device peak, host peak, fps)",
    )
    checkpoint: str | None = arg(
        None, "verify with this checkpoint (default: the download cache, else random-init)"
    )

    def validate(self) -> None:
        """One-line errors for values the type alone does not rule out."""
        super().validate()
        if self.format not in ("text", "json"):
            raise InputError(f"format: must be text or json, got {self.format!r}")
        if self.verify < 0:
            raise InputError(f"verify: frames must be >= 0, got {self.verify}")
        if self.lookup is not None and not Path(self.lookup).expanduser().is_file():
            what = "is a folder" if Path(self.lookup).expanduser().is_dir() else "no such file"
            raise InputError(f"lookup: {self.lookup}: {what} (sam2tune lookup writes "
                             "<out>/gpu_lookup.json)")
        if self.checkpoint is not None and not Path(self.checkpoint).expanduser().is_file():
            raise InputError(f"checkpoint: {self.checkpoint}: no such file")


@dataclass
class LookupArgs(ModelArgs):
    """``sam2tune lookup``: the per-GPU lookup table."""

    out: str | None = arg(None, "output folder (default results_dir/lookup)")
    host_budget: str | None = arg(None, "host RAM budget, e.g. 64GiB (default: 64GiB)")

    def validate(self) -> None:
        """The table is a fixed grid of GPUs x lengths x objects x sizes x prompting: an
        argument that would pick one cell is refused, not ignored."""
        super().validate()
        for name in ("budget", "gpu"):
            if getattr(self, name) is not None:
                raise InputError(f"lookup: {name}: the table has every catalog GPU "
                                 "(`sam2tune recommend` answers for one)")
        grid = Workload(model=self.workload.model, image_size=1024, num_frames=3600)
        for f in dataclasses.fields(Workload):
            if f.name != "model" and getattr(self.workload, f.name) != getattr(grid, f.name):
                raise InputError(f"lookup: workload.{f.name}: the table's grid sets it "
                                 "(only workload.model is the table's; `sam2tune recommend` "
                                 "answers for one workload)")


@dataclass
class PredictArgs:
    """``sam2tune predict``: besides these, any ``sam2tune run`` override describes the run,
    or recommend's ``workload.*`` fields do (``sam2tune recommend --help``), not both."""

    format: str = arg("text", "text | json")
    model_file: str | None = arg(None, "memory model JSON (default: conf/memory_model.json)")
    device_kind: str = arg("cuda", "cuda | cpu: which coefficients apply")
    budget: str | None = arg(None, "with a budget: max_frames_within_budget, e.g. 24GiB")
    gpu: str | None = arg(None, 'a catalog GPU instead of budget, e.g. "RTX 4090" (as recommend)')
    host_budget: str | None = arg(None, "host RAM budget for max_frames_within_budget")

    def validate(self) -> None:
        """The GPU as the catalog spells it (``NVIDIA GeForce RTX 4090``: RTX 4090)."""
        self.gpu = _catalog_spelling(self.gpu)


def _catalog_spelling(gpu: str | None) -> str | None:
    """``gpu`` as the catalog names it when it is one (nvidia-smi's and torch's spellings
    included); otherwise as given, for :func:`sam2tune.gpus.resolve_budget` to refuse."""
    from sam2tune.gpus import canonical_gpu

    return None if gpu is None else canonical_gpu(gpu) or gpu


@dataclass
class FitArgs:
    """``sam2tune fit``."""

    results_dir: str = arg("results", "calibration runs to fit on (several: A,B)")
    validation_dir: str | None = arg(
        None, "held-out runs: error per axis (random + extrapolation; several: A,B)"
    )
    out: str | None = arg(None, "model file (default results_dir/memory_model.json)")
    impl_dir: str | None = arg(
        None,
        "runs of impl=transformers (e.g. results/implementations): its activation ratios to "
        "sam2's (several: A,B; their sam2 runs are not used)",
    )


@dataclass
class CalibrateArgs:
    """``sam2tune calibrate``: besides these, run overrides applied to every point."""

    design: str = arg(
        "calibration", "calibration | validation (sam2tune/memory_model/design.py)"
    )
    seed: int = arg(0, "seed of the validation set's random draw")
    jobs: int = arg(
        1,
        "isolated runs at once (one GPU shared: allocator figures stay per process; "
        "NVML device-wide figures and free-at-start then include the other runs)",
    )


def load_model(ta: ModelArgs) -> tuple[MemoryModel, Path]:
    """The memory model file to use (model_file, else results_dir's, else the shipped one)."""
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


def workload(ta: ModelArgs) -> tuple[Workload, ModelConfig]:
    """The workload with its model's exact weight size, and the model preset."""
    preset = model_preset(ta.workload.model)
    return dataclasses.replace(ta.workload, weights_bytes=preset.weights_bytes), preset


def host_budget(ta: ModelArgs) -> tuple[int, str]:
    """The host RAM budget in bytes and how it was chosen."""
    if ta.host_budget is None:
        b = int(psutil.virtual_memory().total)
        return b, f"{fmt_bytes(b)} (this machine's RAM)"
    try:
        parsed = parse_bytes(ta.host_budget, name="host_budget")
    except ValueError as e:
        raise InputError(str(e)) from None
    if parsed is None:
        raise InputError("host_budget: give a size such as 64GiB")
    return parsed, fmt_bytes(parsed)


def recorded_runs(results_dir: str) -> Any:
    """The recorded runs under ``results_dir`` prepared for scoring quality and speed (None when
    there are none): ``tune``, ``recommend`` and ``lookup`` score with the same data."""
    if not Path(results_dir).is_dir():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InvalidRecordWarning)  # `sam2tune report` lists them
        df = load_results(results_dir)
    return prepare(df) if not df.empty else None

"""A recommendation as a typed answer: what ``sam2tune recommend`` prints (text or JSON) and
what ``sam2tune.recommend(...)`` returns, with the code to run it.

    rec = sam2tune.recommend(gpu="RTX 4090", num_frames=3600, num_objects=10)
    predictor = rec.build_predictor(checkpoint, "cuda")
    for frame_idx, obj_ids, mask_logits in rec.propagate(predictor, video_path, prompts):
        ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam2tune.errors import InputError
from sam2tune.gpus import resolve_budget, usable_memory
from sam2tune.memory_model.memory import Candidate, Workload
from sam2tune.speed_model.model import SpeedPrediction
from sam2tune.tune.space import answer_speed
from sam2tune.units import fmt_bytes

__all__ = ["Recommendation", "NothingFits", "answer", "recommend", "prompt_schedule"]


class NothingFits(InputError):
    """No configuration fits the budgets; the message says the smallest change that would."""

    def __init__(self, message: str, usable_budget_bytes: int) -> None:
        super().__init__(message)
        self.usable_budget_bytes = usable_budget_bytes


@dataclass
class Recommendation:
    """The chosen configuration for a GPU (or budget) and workload. Sizes in bytes; every figure
    is *predicted* by the memory model unless its source says otherwise."""

    target: str  #: the GPU or budget asked about, in words
    budget_bytes: int  #: the GPU's memory (vendor figure) or the budget given
    usable_budget_bytes: int  #: what SAM 2's tensors may take (sam2tune.gpus.usable_memory)
    usable_rule: str  #: that rule with its figures and their sources
    host_budget_bytes: int  #: host RAM budget
    device_kind: str  #: cuda | cpu: which coefficients and deductions applied
    workload: Workload  #: the workload as understood (its prompt schedule below)
    prompt_schedule: str  #: when each object is prompted, as assumed
    candidate: Candidate  #: the chosen knobs
    overrides: list[str]  #: the same as ``sam2tune run`` overrides
    predicted_device_peak_bytes: int  #: accelerator peak (allocated), predicted
    predicted_host_peak_bytes: int  #: host RSS peak, predicted
    margin_bytes: int  #: usable budget - predicted accelerator peak
    expected_speed: float  #: relative to stock SAM 2 (> 1 faster)
    speed_source: str  #: measured (record named) or prior (source named)
    expected_quality: float  #: agreement with the full-quality run
    quality_source: str
    trust: str  #: whether the prediction extrapolates fitted terms, and how far
    reasons: list[str]  #: why each knob: what the workload would need without it
    answer_source: str  #: model screen or the per-GPU lookup table
    model_file: str  #: the memory model file used
    calibrated_on: str  #: the coefficients' device kind
    snippet: str  #: a script that runs as printed once its four edit lines are set
    figure: str = "predicted"
    terms: dict[str, int] = field(default_factory=dict)  #: device terms, bytes
    #: the speed model's steady fps and end-to-end time on this device kind (None: no
    #: calibration for it)
    speed: SpeedPrediction | None = None
    #: the speed figure in words, and what it rests on (device calibrated on, runs, error)
    speed_text: str = ""
    speed_provenance: str = ""

    def build_predictor(self, checkpoint: str | None = None, device: Any = "cuda") -> Any:
        """The predictor with this answer's build-time knobs (:func:`sam2tune.build_predictor`)."""
        from sam2tune.api import build_predictor

        c, w = self.candidate, self.workload
        return build_predictor(
            w.model, checkpoint, device, image_size=c.image_size or w.image_size,
            max_cond_frames_in_attn=c.max_cond_frames_in_attn, predictor=c.predictor,
            impl=c.impl, dtype=c.dtype if c.impl == "transformers" else "float32",
        )

    def propagate(
        self, predictor: Any, video_path: str, prompts: Sequence[Mapping[str, Any]]
    ) -> Iterator[Any]:
        """:func:`sam2tune.propagate` with this answer's run-time knobs."""
        from sam2tune.api import propagate

        c = self.candidate
        return propagate(
            predictor, video_path, prompts, strategy=c.strategy, segment_frames=c.segment_frames,
            prefetch=c.stream_prefetch, offload_video_to_cpu=c.offload_video_to_cpu,
            offload_state_to_cpu=c.offload_state_to_cpu,
            dtype=c.dtype, vision_features_cache=c.vision_features_cache,
            object_batch=c.object_batch,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``recommend ... format=json``)."""
        d = dataclasses.asdict(self)
        d["knobs"] = d.pop("candidate")
        return d


def prompt_schedule(w: Workload) -> str:
    """When each object is prompted, in words (what an answer assumed)."""
    per = w.prompted()
    if all(fs == per[0] for fs in per):
        fs = per[0]
        if w.prompt_every:
            what = f"frame 0 and every {w.prompt_every} frames ({len(fs)} prompted frames)"
        elif len(fs) == 1:
            what = f"frame {fs[0]} only"
        else:
            what = f"{len(fs)} frames spread evenly ({', '.join(map(str, fs[:6]))}"
            what += ", ...)" if len(fs) > 6 else ")"
        return f"{w.num_objects} object(s), each prompted on {what}"
    parts = [f"object {i + 1}: first prompted on frame {fs[0]} ({len(fs)} prompted frames)"
             for i, fs in enumerate(per)]
    return "; ".join(parts)


def _choose(ta: Any, w: Workload, budget: int, hb: int, model: Any) -> tuple[Any, str]:
    from sam2tune.tune.args import recorded_runs
    from sam2tune.tune.recommend import from_lookup, nothing_fits
    from sam2tune.tune.recommend import recommend as screen_best
    from sam2tune.tune.space import impls_of
    from sam2tune.tune.tuner import evaluate

    lk = (  # the lookup table's answers consider every implementation
        from_lookup(
            Path(ta.lookup or Path(ta.results_dir) / "lookup" / "gpu_lookup.json"), ta.gpu, w, hb
        )
        if ta.impl == "any" and ta.gpu
        else None
    )
    data = recorded_runs(ta.results_dir)
    if lk is not None:
        c = Candidate(**lk["candidate"])
        return evaluate(w, c, budget, hb, model, ta.device_kind, data), "per-GPU lookup table"
    found, choices = screen_best(w, budget, hb, model, ta.device_kind, data, impls_of(ta.impl))
    if found is None:
        raise NothingFits(nothing_fits(w, budget, hb, choices, model, ta.device_kind), budget)
    return found, f"memory model screen of the knob space ({len(choices)} candidates)"


def answer(ta: Any) -> Recommendation:
    """The recommendation for ``ta`` (:class:`sam2tune.tune.cli.RecommendArgs`).

    Raises:
        NothingFits: no configuration fits (the message names the smallest change).
        InputError: a bad argument (one line naming it).
    """
    from sam2tune.tune.args import host_budget, load_model, workload
    from sam2tune.tune.snippet import snippet
    from sam2tune.tune.text import why_lines

    total, desc = resolve_budget(ta.budget, ta.gpu)
    hb, _ = host_budget(ta)
    w, preset = workload(ta)
    model, path = load_model(ta)
    budget, rule = usable_memory(total, model, ta.device_kind)
    best, source = _choose(ta, w, budget, hb, model)
    p = best.prediction
    return Recommendation(
        target=desc,
        budget_bytes=int(total),
        usable_budget_bytes=int(budget),
        usable_rule=rule,
        host_budget_bytes=int(hb),
        device_kind=ta.device_kind,
        workload=w,
        prompt_schedule=prompt_schedule(w),
        candidate=best.candidate,
        overrides=best.candidate.overrides(w),
        predicted_device_peak_bytes=int(p.device_peak_bytes),
        predicted_host_peak_bytes=int(p.host_peak_bytes),
        margin_bytes=int(budget - p.device_peak_bytes),
        expected_speed=float(best.speed),
        speed_source=best.speed_source,
        expected_quality=float(best.quality),
        quality_source=best.quality_source,
        trust=p.trust["statement"],
        reasons=[x.strip() for x in why_lines(best, w, budget, hb, model, ta.device_kind)],
        answer_source=source,
        model_file=str(path),
        calibrated_on=model.kind(ta.device_kind)[1],
        snippet=snippet(w, best.candidate, preset.checkpoint_name, ta.device_kind),
        terms={k: int(v) for k, v in p.terms.items()},
        **_speed(w, best.candidate, ta.device_kind, ta.gpu),
    )


def _speed(w: Workload, c: Candidate, kind: str, gpu: str | None) -> dict[str, Any]:
    sp, text, rests = answer_speed(w, c, kind, gpu)
    return {"speed": sp, "speed_text": text, "speed_provenance": rests}


def recommend(
    gpu: str | None = None,
    budget: str | int | None = None,
    host_budget: str | int | None = None,
    *,
    impl: str = "any",
    device_kind: str = "cuda",
    results_dir: str = "results",
    model_file: str | None = None,
    **workload: Any,
) -> Recommendation:
    """The best configuration for a GPU (``gpu="RTX 4090"``) or a budget (``budget="24GiB"``)
    and a workload (``model``, ``image_size``, ``num_frames``, ``num_objects``,
    ``prompt_every``, ``num_cond_frames``, ``video_height``, ``video_width``: the names of
    ``sam2tune recommend workload.*=``).

    Raises:
        NothingFits: nothing fits (the message names the smallest change).
        sam2tune.errors.InputError: a bad argument, named.
    """
    from sam2tune.config.args import parse
    from sam2tune.tune.args import RecommendArgs

    args = [f"impl={impl}", f"device_kind={device_kind}", f"results_dir={results_dir}"]
    for name, v in (("gpu", gpu), ("budget", budget), ("host_budget", host_budget),
                    ("model_file", model_file)):
        if v is not None:
            args.append(f"{name}={v!s}")
    fields = {f.name for f in dataclasses.fields(Workload)} - {"weights_bytes", "cond_frames"}
    for k, v in workload.items():
        if k not in fields:
            raise InputError(f"{k}: not a workload field ({', '.join(sorted(fields))})")
        args.append(f"workload.{k}={v}")
    return answer(parse(args, "recommend", RecommendArgs))


def describe(rec: Recommendation) -> list[str]:
    """The answer as text lines (``sam2tune recommend``'s output before the snippet)."""
    from sam2tune.tune.text import choice_lines

    w = rec.workload
    return [
        f"sam2tune recommendation for {rec.target}; host RAM {fmt_bytes(rec.host_budget_bytes)}",
        f"budget: {rec.usable_rule}",
        f"workload: {w.model} @ {w.image_size} px, {w.num_frames} frames, {w.num_objects} "
        f"objects, video {w.video_width}x{w.video_height}",
        f"prompts assumed: {rec.prompt_schedule}",
        f"answer from: {rec.answer_source}; memory model calibrated on {rec.calibrated_on} "
        f"({rec.model_file})",
        *choice_lines(
            "chosen", rec.overrides[1:], rec.predicted_device_peak_bytes,
            rec.predicted_host_peak_bytes, rec.usable_budget_bytes, rec.host_budget_bytes,
            rec.expected_speed, rec.speed_source, rec.expected_quality, rec.quality_source,
        ),
        f"  {rec.speed_text} [predicted: {rec.speed_provenance}]",
        *[f"  {r}" for r in rec.reasons],
    ]

"""Text of the memory model's and the tuner's answers: a chosen configuration, why its knobs,
errors per axis. The command bodies compute; these render."""

from __future__ import annotations

import dataclasses
from typing import Any

from sam2tune.memory_model.memory import Workload, predict
from sam2tune.units import fmt_bytes

__all__ = ["print_errors", "choice_lines", "describe_choice", "why_lines", "ranked_table"]


def print_errors(ev, summary) -> None:
    """Per-run and per-axis errors of the held-out and extrapolation runs."""
    for r in ev.itertuples():
        print(
            f"  {r.axis:24s} {r.model} {r.image_size}px {r.num_frames}f {r.num_objects}obj "
            f"mem={r.memory_frames} {r.knobs}: device {fmt_bytes(r.device_pred)} vs "
            f"{fmt_bytes(r.device_actual)} ({r.device_err:+.1%}), host {fmt_bytes(r.host_pred)} "
            f"vs {fmt_bytes(r.host_actual)} ({r.host_err:+.1%}); activations "
            f"{fmt_bytes(r.act_pred)} vs {fmt_bytes(r.act_actual)} ({r.act_err:+.1%})"
        )
    for kind, axes in summary.items():
        for axis, s in axes.items():
            print(
                f"  [{kind}] {axis:24s} {s['runs']:3d} runs: device median "
                f"{s['device_median']:.1%} "
                f"max {s['device_max']:.1%}; host median {s['host_median']:.1%} "
                f"max {s['host_max']:.1%}; activations alone median "
                f"{s['activations_median']:.1%} max {s['activations_max']:.1%}"
            )


def choice_lines(
    label: str, overrides: list[str], device_peak: int, host_peak: int, budget: int, hb: int,
    speed: float, speed_source: str, quality: float, quality_source: str,
) -> list[str]:
    """A chosen configuration as text (``tune``'s best and ``recommend``'s answer alike):
    ``budget`` is the usable accelerator memory, ``hb`` the host budget."""
    margin = budget - device_peak
    return [
        f"{label}: {' '.join(overrides)}",
        f"  predicted accelerator peak {fmt_bytes(device_peak)}, margin {fmt_bytes(margin)} "
        f"({margin / max(1, budget):.0%} of the usable budget) [predicted]",
        f"  predicted host peak {fmt_bytes(host_peak)} of {fmt_bytes(hb)} [predicted]",
        f"  expected speed {speed:.2f}x stock's [{speed_source}]",
        f"  expected quality: agreement {quality:.3f} with the full-quality run "
        f"[{quality_source}]",
    ]


def describe_choice(ch, w, budget, hb, label="chosen") -> list[str]:
    p = ch.prediction
    return choice_lines(
        label, ch.candidate.overrides(w)[1:], p.device_peak_bytes, p.host_peak_bytes,
        budget, hb, ch.speed, ch.speed_source, ch.quality, ch.quality_source,
    )


def why_lines(ch, w, budget, hb, model, device_kind) -> list[str]:
    """Why the chosen knobs: what the workload would need without each remedy it takes."""
    c = ch.candidate
    p = ch.prediction
    r, ph = p.memory_read, p.activation_phases
    out = [
        f"  attention: each step reads {r['frames']} memory frames + {r['pointers']} object "
        f"pointers ({r['tokens']} tokens x {r['batch']} object(s)); activations "
        f"{fmt_bytes(p.terms['activations'])} (memory attention "
        f"{fmt_bytes(ph['memory_attention'])}, "
        f"image encoder {fmt_bytes(ph['image_encoder'])}) [predicted]"
    ]
    checks = []
    if c.max_cond_frames_in_attn != -1:
        checks.append(
            ("max_cond_frames_in_attn", dataclasses.replace(c, max_cond_frames_in_attn=-1))
        )
    if c.offload_video_to_cpu:
        checks.append(("offload_video_to_cpu", dataclasses.replace(c, offload_video_to_cpu=False)))
    if c.strategy != "stock":
        checks.append((f"strategy={c.strategy}", dataclasses.replace(c, strategy="stock")))
    if c.offload_state_to_cpu:
        checks.append(("offload_state_to_cpu", dataclasses.replace(c, offload_state_to_cpu=False)))
    for name, alt in checks:
        q = predict(w, alt, model, device_kind)
        over_dev = q.device_peak_bytes > budget
        over_host = q.host_peak_bytes > hb
        if not (over_dev or over_host):
            continue
        qr = q.memory_read
        what = []
        if over_dev:
            what.append(
                f"accelerator {fmt_bytes(q.device_peak_bytes)} > {fmt_bytes(budget)}"
                + (
                    f" (attention would read {qr['frames']} memory frames: activations "
                    f"{fmt_bytes(q.terms['activations'])})"
                    if name == "max_cond_frames_in_attn"
                    else ""
                )
            )
        if over_host:
            what.append(f"host {fmt_bytes(q.host_peak_bytes)} > {fmt_bytes(hb)}")
        out.append(f"  why {name}: without it, {'; '.join(what)} [predicted]")
    said = {line.split(":")[0] for line in out}
    speed = _speed_lines(c, w, budget, model, device_kind)
    out += [x for x in speed if x.split(":")[0] not in said]
    out.append(f"  trust: {p.trust['statement']}")
    return out


def _speed_lines(c, w, budget, model, device_kind) -> list[str]:
    """Why the knobs taken for speed: the predicted end-to-end time without each; for object
    batches, why not a larger batch (its predicted accelerator peak)."""
    from sam2tune.tune.space import end_to_end_s

    out = []
    alts = []
    if c.strategy == "stream":
        alts.append(("strategy=stream", dataclasses.replace(c, strategy="stock")))
    if c.object_batch != 1:
        alts.append((f"object_batch={c.object_batch}", dataclasses.replace(c, object_batch=1)))
    t = end_to_end_s(c, w, device_kind)
    for name, alt in alts:
        t0 = end_to_end_s(alt, w, device_kind)
        if t is not None and t0 is not None and t0 > t:
            out.append(
                f"  why {name}: predicted end-to-end {t:.1f} s vs {t0:.1f} s without it "
                "[predicted: speed model]"
            )
    if c.object_batch > 1:  # a cap: say what the whole group at once would need
        q = predict(w, dataclasses.replace(c, object_batch=0), model, device_kind)
        if q.device_peak_bytes > budget:
            out.append(
                f"  why object_batch={c.object_batch}, not all at once: accelerator "
                f"{fmt_bytes(q.device_peak_bytes)} > {fmt_bytes(budget)} [predicted]"
            )
    return out


def ranked_table(choices: list[Any], w: Workload) -> list[str]:
    """``tune``'s table of the best feasible choices (quality, speed, predicted peaks,
    confirmation, overrides)."""
    lines = [
        f"{'quality':>8s} {'speed':>6s} {'device peak':>12s} {'host peak':>12s} confirmed  config"
    ]
    for c in choices:
        conf = c.confirmed["status"] if c.confirmed else "-"
        lines.append(
            f"{c.quality:8.3f} {c.speed:6.2f} {fmt_bytes(c.prediction.device_peak_bytes):>12s} "
            f"{fmt_bytes(c.prediction.host_peak_bytes):>12s} {conf:9s}  "
            f"{' '.join(c.candidate.overrides(w)[1:])}"
        )
    return lines

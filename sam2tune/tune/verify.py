"""Closing the loop on the user's machine: run an answer's snippet for N frames and compare.

``sam2tune recommend ... verify=N`` executes the answer's own snippet (the code the user
pastes: only its four edit lines set - a checkpoint, a synthetic JPEG video of N frames at the
workload's video size, the snippet's own example prompts, this machine's device) in a fresh
Python process, and prints what it measured (peak accelerator memory on CUDA, peak host RSS,
fps) beside what the memory model predicts for the same N frames on this machine's device kind.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sam2tune.units import fmt_bytes

__all__ = ["verify", "verify_lines", "edit_snippet"]

#: wraps sam2tune.propagate to time the snippet's loop (the snippet's code is not changed)
_PROLOGUE = """
import time as _time, sam2tune as _s
_T = {"n": 0}
_orig = _s.propagate
def _timed(*a, **k):
    it = _orig(*a, **k)
    def gen():
        _T["start"] = _time.perf_counter()
        for x in it:
            _T["n"] += 1
            _T.setdefault("first", _time.perf_counter())
            _T["last"] = _time.perf_counter()
            yield x
    return gen()
_s.propagate = _timed
"""

#: peak RSS of this process alone: VmHWM (the high-water mark of this process's own memory
#: map); ru_maxrss would carry over the parent's peak across fork + exec on Linux
_EPILOGUE = """
import json as _json, resource as _res, torch as _torch
def _hwm():
    try:
        for _l in open("/proc/self/status"):
            if _l.startswith("VmHWM:"):
                return int(_l.split()[1]) * 1024
    except OSError:
        pass
    return _res.getrusage(_res.RUSAGE_SELF).ru_maxrss * 1024
_out = dict(globals().get("_T", {}), frame_idx=int(frame_idx), masks_shape=list(masks.shape),
            host_peak_bytes=_hwm())
if _torch.cuda.is_available():
    _out["device_peak_bytes"] = int(_torch.cuda.max_memory_allocated())
print("SAM2TUNE_VERIFY " + _json.dumps(_out))
"""


def edit_snippet(code: str, **values: str) -> str:
    """The snippet with its top-level edit lines (``checkpoint = ...`` etc.) set to ``values``
    (Python source); every other line unchanged."""
    tree = ast.parse(code)
    seen = set()
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id in values):
            name = node.targets[0].id
            node.value = ast.parse(values[name], mode="eval").body
            seen.add(name)
    missing = set(values) - seen
    if missing:
        raise ValueError(f"snippet: no top-level assignment of {', '.join(sorted(missing))}")
    return ast.unparse(tree)


def _video(d: Path, n: int, height: int, width: int) -> None:
    import numpy as np
    from PIL import Image

    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    bg = (rng.random((height, width, 3)) * 90).astype(np.uint8)
    for i in range(n):
        a = bg.copy()
        x = (i * max(1, width // 100)) % max(1, width // 2)
        a[height // 4: height // 2, x: x + width // 4] = (230, 70, 70)
        Image.fromarray(a).save(d / f"{i:05d}.jpg", quality=90)


def _checkpoint(rec: Any, given: str | None, tmp: Path) -> tuple[str, str]:
    """A checkpoint file for the snippet and its weights label: the one given, the download
    cache's, else random-init weights written to ``tmp``."""
    import torch

    from sam2tune.adapter.build import build_predictor
    from sam2tune.adapter.checkpoints import resolve_checkpoint
    from sam2tune.config.presets import model_preset
    from sam2tune.config.schema import KnobsConfig
    from sam2tune.paths import cache_dir

    cfg = model_preset(rec.workload.model, checkpoint=given)
    found = resolve_checkpoint(cfg, cache_dir())
    if found is not None:
        return str(found), f"checkpoint {found}"
    built = build_predictor(cfg, KnobsConfig(), torch.device("cpu"), cache_dir())
    path = tmp / "random-init.pt"
    torch.save({"model": built.predictor.state_dict()}, path)
    return str(path), "random-init (memory and speed faithful; masks not)"


def verify(rec: Any, frames: int, checkpoint: str | None = None, quiet: bool = False) -> dict:
    """Run ``rec.snippet`` for ``frames`` frames here; measured and predicted figures."""
    import torch

    from sam2tune.memory_model.memory import MemoryModel, predict

    kind = "cuda" if torch.cuda.is_available() else "cpu"
    w = rec.workload
    wv = dataclasses.replace(w, num_frames=frames, prompt_every=0, num_cond_frames=1,
                             cond_frames=[[fs[0]] for fs in w.prompted()], object_frames=None)
    with tempfile.TemporaryDirectory(prefix="sam2tune-verify-") as t:
        tmp = Path(t)
        _video(tmp / "frames", frames, w.video_height, w.video_width)
        ckpt, weights = _checkpoint(rec, checkpoint, tmp)
        code = edit_snippet(rec.snippet, checkpoint=repr(ckpt),
                            video_path=repr(str(tmp / "frames")), device=repr(kind))
        (tmp / "snippet.py").write_text(_PROLOGUE + code + "\n" + _EPILOGUE)
        if not quiet:
            print(f"verify: running the snippet for {frames} frames on {kind} ...", flush=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.run([sys.executable, str(tmp / "snippet.py")], cwd=t, env=env,
                              capture_output=True, text=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("SAM2TUNE_VERIFY ")]
    if proc.returncode != 0 or not line:
        err = [x for x in proc.stderr.strip().splitlines() if x.strip()][-1:] or ["?"]
        return {"status": "failed", "error": err[0], "frames": frames, "device_kind": kind}
    m = json.loads(line[0].split(" ", 1)[1])
    p = predict(wv, rec.candidate, MemoryModel.load(rec.model_file), kind)
    n, span = m["n"], m["last"] - m["start"]
    return {
        "status": "ok", "frames": frames, "device_kind": kind, "weights": weights,
        "frames_yielded": n, "last_frame_idx": m["frame_idx"], "masks_shape": m["masks_shape"],
        "measured_device_peak_bytes": m.get("device_peak_bytes"),
        "predicted_device_peak_bytes": p.device_peak_bytes,
        "measured_host_peak_bytes": m["host_peak_bytes"],
        "predicted_host_peak_bytes": p.host_peak_bytes,
        "measured_fps_end_to_end": n / span if span > 0 else None,
        "measured_fps_propagation": (n - 1) / (m["last"] - m["first"]) if n > 1 else None,
        **_predicted_speed(wv, rec.candidate, kind),
        "expected_speed_ratio": rec.expected_speed,
        "speed_source": rec.speed_source,
    }


def _predicted_speed(w: Any, c: Any, kind: str) -> dict[str, Any]:
    """The speed model's figures for the verified workload (None where it has no calibration
    for ``kind``), with what they rest on."""
    from sam2tune.tune.space import answer_speed

    sp, _, rests = answer_speed(w, c, kind)
    return {
        "predicted_fps": sp.fps if sp else None,
        "predicted_end_to_end_s": sp.end_to_end_s if sp else None,
        "speed_provenance": rests,
    }


def verify_lines(v: dict) -> list[str]:
    """``verify`` as text: measured beside predicted, each labelled."""
    if v["status"] != "ok":
        return [f"verify: the snippet failed on {v['device_kind']}: {v['error']}"]
    dev = v["measured_device_peak_bytes"]
    out = [
        f"verify: the snippet ran {v['frames_yielded']} of {v['frames']} frames on "
        f"{v['device_kind']} (weights {v['weights']}; masks {v['masks_shape']} on the last frame)",
        "  accelerator peak "
        + (f"{fmt_bytes(dev)} [measured: torch.cuda.max_memory_allocated]" if dev is not None
           else "not measurable here [no accelerator: the CPU is the device]")
        + f" vs {fmt_bytes(v['predicted_device_peak_bytes'])} [predicted, {v['device_kind']} "
        "coefficients]",
        f"  host peak {fmt_bytes(v['measured_host_peak_bytes'])} [measured: peak RSS] vs "
        f"{fmt_bytes(v['predicted_host_peak_bytes'])} [predicted]",
        f"  speed {v['measured_fps_end_to_end']:.2f} fps end to end, "
        f"{(v['measured_fps_propagation'] or 0):.2f} fps propagation [measured] vs "
        + (
            f"{v['predicted_fps']:.2f} fps steady, {v['predicted_end_to_end_s']:.1f} s end to end"
            if v.get("predicted_fps") else "no predicted fps"
        )
        + f" [predicted: {v.get('speed_provenance', '?')}]",
    ]
    return out

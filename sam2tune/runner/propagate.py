"""The propagation loop of one SAM 2 session with its probes: init_state, every prompt, then
every frame, timed per step, with the per-frame census / RSS timeline and (on the last frames)
the step's activation peak. Used by the measured run and by its reference."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import torch

from sam2tune.adapter.arch import arch_of_predictor
from sam2tune.adapter.build import Predictor
from sam2tune.adapter.census import Census
from sam2tune.adapter.encoder import EncoderTimer, encoder_entry
from sam2tune.adapter.hf import HFPredictor, HFSession
from sam2tune.adapter.segments import SegmentedSession
from sam2tune.adapter.session import FrameStep, PromptStep, Session, VideoSession
from sam2tune.config.schema import KnobsConfig, cuda_refusal
from sam2tune.errors import InputError
from sam2tune.metrics import MaskDir, MaskSet
from sam2tune.probes import TensorTracker, rss_bytes
from sam2tune.scenario import Prompt
from sam2tune.speed_model.timing import SteadyTiming, steady_median, steady_timing
from sam2tune.video.sources import VideoData

__all__ = [
    "resolve_device",
    "propagate",
    "Propagation",
    "FrameProbe",
    "TimelineRow",
    "PROGRESS_TAG",
]

PROGRESS_TAG = "SAM2TUNE-PROGRESS"


def resolve_device(name: str) -> torch.device:
    """``auto`` / ``cpu`` / ``cuda[:i]`` as a torch device (one-line error without CUDA)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    why = cuda_refusal(name)
    if why is not None:
        raise InputError(f"device: {name}: {why}")
    return torch.device(name)


class TimelineRow(TypedDict, total=False):
    """One propagated frame in ``report.json``'s timeline (bytes are integers)."""

    frame: int
    t_s: float
    step_s: float  # SAM 2's step (next() on its generator): encoder_s + tracking_s
    encoder_s: float  # the image encoder within the step (absent where it cannot be timed)
    tracking_s: float  # the rest of the step: per-object tracking, the masks' copy to the host
    host_s: float  # sam2tune's loop after the step, before asking for the next (probes, masks)
    cpu_s: float  # the process's CPU time (every thread) within the step: / step_s = cores used
    tracked: bool
    objects: int
    frames_bytes: int
    state_bytes: int
    cached_features_bytes: int
    device_resident_bytes: int
    host_rss_bytes: int
    cuda_allocated_bytes: int  # CUDA only
    cuda_step_peak_bytes: int  # CUDA only
    frames_held: int  # strategy=stream / segments


@dataclass
class Propagation:
    """What one session produced."""

    masks: MaskSet | MaskDir  # MaskDir: written to disk as they come (stream, long videos)
    init_s: float
    prompt_s: float
    fps: float | None  # steady state: the warm-up frame excluded (speed_model.timing)
    timed_frames: int
    timeline: list[TimelineRow] = field(default_factory=list)
    activation_peak_bytes: int = 0  # tracked (dispatch) transient
    cuda_step_peak_bytes: int | None = None
    cuda_peak_bytes: int | None = None  # max_memory_allocated over the session
    resident_max_bytes: int = 0
    frames_bytes: int = 0
    state_bytes: int = 0
    cached_features_bytes: int = 0
    bank_copy_bytes: int = 0
    frames_held_max: int = 0  # strategy=stream / segments: most decoded frames held at once
    frame_wait_s: float | None = None  # strategy=stream: time the loop waited on decoding
    timing: SteadyTiming | None = None  # fps's basis: warm-up, spread, frames
    # steady medians of the step's split over fps's frames (None where not measured)
    encoder_s: float | None = None
    tracking_s: float | None = None
    host_s: float | None = None
    #: steady median of the step's CPU time / its wall time: the cores a step had (a CPU run on
    #: a busy machine shows fewer than its threads)
    step_cores: float | None = None


def _us(x: float) -> float:
    """Seconds rounded to microseconds (the timeline's resolution)."""
    return round(x, 6)


@dataclass
class _Split:
    """Per timed frame: the encoder's and the host's time (rounded like step_s), and the last
    timeline row, whose ``host_s`` is known when the loop asks SAM 2 for the next step."""

    encoder: EncoderTimer | None
    enc: list[float] = field(default_factory=list)
    host: list[float] = field(default_factory=list)
    row: TimelineRow | None = None
    timed: bool = False
    t_yield: float | None = None

    def ask(self) -> None:
        """The loop asks for the next step: close the last frame's host time, start a count."""
        if self.t_yield is not None:
            h = _us(time.perf_counter() - self.t_yield)
            if self.row is not None:
                self.row["host_s"] = h
            if self.timed:
                self.host.append(h)
            self.t_yield, self.row = None, None
        if self.encoder is not None:
            self.encoder.begin_step()

    def frame(self, timed: bool) -> float | None:
        """SAM 2 yielded a frame: its encoder time (None without a timer)."""
        self.t_yield, self.timed = time.perf_counter(), timed
        enc = _us(self.encoder.step_s()) if self.encoder is not None else None
        if timed and enc is not None:
            self.enc.append(enc)
        return enc


class FrameProbe:
    """The light per-frame probes: after each propagated frame, a timeline row (census by role,
    host RSS, and on CUDA the allocator's step peak) and the running maxima in ``res``."""

    def __init__(self, dev: torch.device, res: Propagation) -> None:
        self.dev, self.res = dev, res
        self.cuda = dev.type == "cuda"
        self.peak_carry = 0  # the allocator's peak before each per-step reset
        self.step_peak = 0
        self.alloc0 = 0
        self.last_census: Census | None = None
        self.last_objects = 0

    def before_step(self) -> None:
        """Reset the allocator's step peak (CUDA) before SAM 2's next step."""
        if self.cuda:
            self.peak_carry = max(self.peak_carry, torch.cuda.max_memory_allocated(self.dev))
            torch.cuda.reset_peak_memory_stats(self.dev)
            self.alloc0 = torch.cuda.memory_allocated(self.dev)

    def after_frame(
        self,
        sess: VideoSession,
        ev: FrameStep,
        dt: float,
        tracked: bool,
        t_s: float,
        encoder_s: float | None = None,
        cpu_s: float | None = None,
    ) -> TimelineRow:
        """Record one propagated frame's timeline row and running maxima."""
        c = sess.census()
        row: TimelineRow = {"frame": ev.frame_idx, "t_s": _us(t_s), "step_s": _us(dt)}
        if cpu_s is not None:
            row["cpu_s"] = _us(cpu_s)
        if encoder_s is not None:
            row["encoder_s"] = encoder_s
            row["tracking_s"] = _us(row["step_s"] - encoder_s)
        row.update(
            {
                "tracked": tracked,
                "objects": len(ev.obj_ids),
                "frames_bytes": c.frames_bytes,
                "state_bytes": c.state_bytes,
                "cached_features_bytes": c.cached_features_bytes,
                "device_resident_bytes": c.device_resident_bytes,
                "host_rss_bytes": rss_bytes(),
            }
        )
        res = self.res
        if self.cuda:
            step_peak = torch.cuda.max_memory_allocated(self.dev) - self.alloc0
            self.step_peak = max(self.step_peak, step_peak)
            row["cuda_allocated_bytes"] = int(torch.cuda.memory_allocated(self.dev))
            row["cuda_step_peak_bytes"] = int(step_peak)
        if sess.frames is not None:
            row["frames_held"] = len(sess.frames.images)
            res.frames_held_max = max(res.frames_held_max, row["frames_held"])
        res.timeline.append(row)
        res.resident_max_bytes = max(res.resident_max_bytes, c.device_resident_bytes)
        res.frames_bytes = max(res.frames_bytes, c.frames_bytes)
        res.state_bytes = max(res.state_bytes, c.state_bytes)
        res.cached_features_bytes = max(res.cached_features_bytes, c.cached_features_bytes)
        self.last_census, self.last_objects = c, len(ev.obj_ids)
        return row

    def finish(self) -> None:
        """The session's CUDA peaks into the propagation's result."""
        if self.cuda:
            self.res.cuda_step_peak_bytes = int(self.step_peak)
            self.res.cuda_peak_bytes = int(
                max(self.peak_carry, torch.cuda.max_memory_allocated(self.dev))
            )


def _bank_copy_bytes(
    probe: FrameProbe, prompts: list[Prompt], knobs: KnobsConfig, predictor: Predictor
) -> int:
    """offload_state_to_cpu: the memory bank copied back to the device per step, sized from the
    final census and the frames one step reads."""
    c = probe.last_census
    if not knobs.offload_state_to_cpu or c is None or not c.maskmem_entries:
        return 0
    if _is_hf(predictor):  # transformers keeps the memory bank on the device (nothing copied)
        return 0
    per_obj_frame = c.maskmem_bytes // c.maskmem_entries
    attended = len({p.frame for p in prompts})
    if knobs.max_cond_frames_in_attn != -1:
        attended = min(attended, knobs.max_cond_frames_in_attn)
    batch = probe.last_objects if knobs.predictor == "legacy_batched" else 1
    return per_obj_frame * (attended + arch_of_predictor(predictor).num_maskmem - 1) * batch


def _is_hf(predictor: Predictor) -> bool:
    """Whether ``predictor`` is transformers' (impl=transformers)."""
    return isinstance(predictor, HFPredictor)


def _open_session(
    predictor: Predictor, video: VideoData, knobs: KnobsConfig, mask_dir: Path | None
) -> tuple[VideoSession, MaskSet | MaskDir]:
    sess: VideoSession
    if _is_hf(predictor):  # knobs it lacks (strategies, segments) were refused at config time
        return HFSession(predictor, video.sam2_path, knobs), MaskSet(video.height, video.width)
    if knobs.segment_frames:
        sess = SegmentedSession(predictor, video.sam2_path, knobs, video.num_frames)
    else:
        sess = Session(predictor, video.sam2_path, knobs)
    if knobs.strategy != "stream":
        return sess, MaskSet(video.height, video.width)
    root = mask_dir if mask_dir is not None else Path(tempfile.mkdtemp(prefix="sam2tune-masks-"))
    return sess, MaskDir(root, video.height, video.width)


def _next_step(
    events: Iterator[Any], tracker: TensorTracker | None
) -> tuple[Any, float, float] | None:
    """SAM 2's next unit of work (under the tensor tracker when given), its wall time and the
    process's CPU time within it (every thread: on a CPU, wall x the cores the step had); None at
    the end. The masks' copy to the host inside the step synchronises the device."""
    c1, t1 = time.process_time(), time.perf_counter()
    try:
        with tracker if tracker is not None else nullcontext():
            if tracker is not None:
                tracker.begin_step()
            ev = next(events)
    except StopIteration:
        return None
    return ev, time.perf_counter() - t1, time.process_time() - c1


def _report_progress(done: int, total: int, elapsed: float) -> None:
    """``PROGRESS <done> <total> <seconds>`` on stderr (the parent shows a progress line)."""
    print(f"{PROGRESS_TAG} {done} {total} {elapsed:.3f}", file=sys.stderr, flush=True)


def _steps(
    sess: VideoSession,
    prompts: list[Prompt],
    order: list[int],
    tracked: set[int],
    tracker: TensorTracker | None,
    probe: FrameProbe,
    probes: bool,
    progress: bool,
    split: _Split,
) -> list[float]:
    """Every prompt and frame of the session, each timed: the step times of the frames not
    under the tracker, in order (their encoder and host times into ``split``)."""
    res = probe.res
    events = sess.track(prompts)
    timed_steps: list[float] = []
    step = 0
    t_prop = time.perf_counter()
    while True:
        nxt = order[step] if step < len(order) else None
        track_now = tracker is not None and (nxt in tracked or sess.next_is_prompt)
        probe.before_step()
        split.ask()
        stepped = _next_step(events, tracker if track_now else None)
        if stepped is None:
            break
        ev, dt, cpu = stepped
        if isinstance(ev, PromptStep):
            res.prompt_s += dt
        if not isinstance(ev, FrameStep):  # a prompt, or a segment's session started
            continue
        step += 1
        enc = split.frame(ev.frame_idx not in tracked)
        if progress:
            _report_progress(step, len(order), time.perf_counter() - t_prop)
        if ev.frame_idx not in tracked:
            timed_steps.append(dt)
        res.masks.add(ev.frame_idx, ev.obj_ids, ev.masks)
        if probes:
            split.row = probe.after_frame(
                sess, ev, dt, ev.frame_idx in tracked, time.perf_counter() - t_prop, enc, cpu
            )
    return timed_steps


def _split_medians(res: Propagation, steps: list[float], split: _Split) -> None:
    """The steady medians of the step's split, over the frames fps rests on."""
    res.host_s = steady_median(split.host)
    cores = [t["cpu_s"] / t["step_s"] for t in res.timeline
             if not t.get("tracked") and t.get("step_s") and "cpu_s" in t]
    res.step_cores = steady_median(cores) if cores else None
    if split.encoder is None or len(split.enc) != len(steps):
        return  # no encoder timing: the split is absent, not guessed
    res.encoder_s = steady_median(split.enc)
    res.tracking_s = steady_median([_us(s - e) for s, e in zip(steps, split.enc, strict=True)])


def propagate(
    predictor: Predictor,
    video: VideoData,
    prompts: list[Prompt],
    knobs: KnobsConfig,
    dev: torch.device,
    track_frames: int = 0,
    probes: bool = True,
    mask_dir: Path | None = None,
    progress: bool = False,
) -> Propagation:
    """Run one SAM 2 session: init_state, every prompt, then propagate through the video.

    Args:
        track_frames: the last N frames (and every prompt) run under :class:`TensorTracker` to
            measure the step's activation peak; they are excluded from fps.
        probes: take the per-frame census / RSS timeline (light).
        mask_dir: where ``strategy=stream`` writes masks (default: a temporary folder).
        progress: print ``PROGRESS <done> <total> <seconds>`` after each frame on stderr (the
            parent turns it into a progress line).
    """
    sess, masks = _open_session(predictor, video, knobs, mask_dir)
    bf16 = knobs.dtype == "bfloat16" and not _is_hf(predictor)  # transformers: a bf16 model
    amp = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    tracker = TensorTracker() if track_frames else None
    res = Propagation(masks, 0.0, 0.0, None, 0)
    probe = FrameProbe(dev, res)
    with amp:
        sess.init()
        order = list(range(min(p.frame for p in prompts), video.num_frames))
        n_track = min(track_frames, max(len(order) - 1, 0)) if tracker is not None else 0
        tracked = set(order[len(order) - n_track :]) if n_track else set()
        entry = encoder_entry(predictor)
        timer = EncoderTimer(*entry, cuda=dev.type == "cuda") if entry is not None else None
        split = _Split(timer)
        with timer if timer is not None else nullcontext():
            timed_steps = _steps(
                sess, prompts, order, tracked, tracker, probe, probes, progress, split
            )
    if isinstance(masks, MaskDir):
        masks.close()  # every queued mask on disk before the run counts as done
    res.bank_copy_bytes = _bank_copy_bytes(probe, prompts, knobs, predictor)
    if tracker is not None:
        tracker.end()
        res.activation_peak_bytes = max(tracker.step_peaks, default=0)
    probe.finish()
    res.init_s = sess.init_s  # segments: every segment's init_state
    # from the step times as the timeline records them (microseconds), so a reader of
    # report.json recomputes the same fps from its timeline
    res.timing = steady_timing([round(s, 6) for s in timed_steps])
    res.timed_frames = len(timed_steps)
    res.fps = res.timing.fps
    _split_medians(res, [_us(s) for s in timed_steps], split)
    sess.close()
    if knobs.strategy == "stream":
        res.frame_wait_s = sess.frame_wait_s
    return res

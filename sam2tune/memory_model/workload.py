"""The memory model's inputs: what the user has (:class:`Workload`) and the knobs it is
predicted under (:class:`Candidate`, the subset of the run's knobs that moves memory)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sam2tune.config.schema import KnobsConfig


#: the largest workload a prediction is made for (10 million frames: 46 h at 60 fps)
_LARGEST = {"num_frames": 10_000_000, "num_objects": 10_000, "image_size": 8192,
            "video_height": 16384, "video_width": 16384}


@dataclass
class Workload:
    """What the user has: model, resolution, video length, objects, prompted frames."""

    model: str = "sam2.1_tiny"
    image_size: int = 1024
    num_frames: int = 300
    num_objects: int = 1
    # prompted (conditioning) frames of each object; with prompt_every > 0 derived from it
    num_cond_frames: int = 1
    # object-frames actually tracked (objects entering late track fewer); None = K x N
    object_frames: int | None = None
    weights_bytes: int = 0
    # each object re-prompted every this many frames (0 = num_cond_frames spread evenly)
    prompt_every: int = 0
    # the source video's own resolution (output masks, JPEG decoding)
    video_height: int = 1080
    video_width: int = 1920
    # exact prompted frames per object, when known (a recorded run, the synthetic scenario)
    cond_frames: list[list[int]] | None = None
    # the frame each object is first prompted on (None = every object on frame 0); with
    # prompt_every each is re-prompted every prompt_every frames from there
    first_frames: list[int] | None = None

    def __post_init__(self) -> None:
        for name in ("image_size", "num_frames", "num_objects", "num_cond_frames",
                     "video_height", "video_width"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"workload.{name}: must be a positive integer, got {v!r}")
        for name, top in _LARGEST.items():  # beyond these a figure is no answer to anything
            if getattr(self, name) > top:
                raise ValueError(f"workload.{name}: at most {top:,}, got {getattr(self, name):,}")
        if self.image_size % 16:
            raise ValueError(
                f"workload.image_size: must be a multiple of 16, got {self.image_size}"
            )
        if self.prompt_every < 0:
            raise ValueError(f"workload.prompt_every: must be >= 0, got {self.prompt_every}")
        if self.prompt_every:
            self.num_cond_frames = len(range(0, self.num_frames, self.prompt_every))
        if self.first_frames is not None and self.cond_frames is None:
            ff = [int(f) for f in self.first_frames]
            if len(ff) != self.num_objects:
                raise ValueError(
                    f"workload.first_frames: one frame per object ({self.num_objects}), got "
                    f"{len(ff)}"
                )
            for i, f in enumerate(ff):
                if not 0 <= f < self.num_frames:
                    raise ValueError(
                        f"workload.first_frames[{i}]: must be in 0..{self.num_frames - 1}, got {f}"
                    )
            step = self.prompt_every or self.num_frames
            self.cond_frames = [list(range(f, self.num_frames, step)) for f in ff]
            self.num_cond_frames = len({f for fs in self.cond_frames for f in fs})
            self.object_frames = sum(self.num_frames - f for f in ff)

    def with_frames(self, n: int) -> Workload:
        """The same workload on a video of ``n`` frames (prompts every ``prompt_every`` kept)."""
        if self.cond_frames is not None:
            conds = [[f for f in fs if f < n] or [0] for fs in self.cond_frames]
            starts = [min(fs) for fs in conds]
            return dataclasses.replace(
                self,
                num_frames=n,
                cond_frames=conds,
                num_cond_frames=len({f for fs in conds for f in fs}),
                object_frames=sum(n - s for s in starts),
            )
        return dataclasses.replace(
            self,
            num_frames=n,
            num_cond_frames=min(self.num_cond_frames, n),
            object_frames=None if self.object_frames is None else self.num_objects * n,
        )

    def cond_per_object(self) -> int:
        """The most prompted (conditioning) frames any one object has."""
        return max(len(fs) for fs in self.prompted())

    def prompted(self) -> list[list[int]]:
        """Prompted frames of each object."""
        if self.cond_frames is not None:
            return [sorted(set(fs)) for fs in self.cond_frames]
        n = self.num_frames
        if self.prompt_every:
            fs = list(range(0, n, self.prompt_every))
        else:
            c = min(self.num_cond_frames, n)
            fs = sorted({int(i * n / c) for i in range(c)})
        return [fs] * self.num_objects


@dataclass(frozen=True, kw_only=True)  # by name only: a new knob cannot shift the others
class Candidate:
    """The knobs a recommendation chooses: a subset of :class:`~sam2tune.config.schema.KnobsConfig`
    (same names, same defaults; checked by a test) plus the input resolution. Converted with
    :meth:`from_knobs` / :meth:`knobs`, never field by field."""

    offload_video_to_cpu: bool = False
    offload_state_to_cpu: bool = False
    max_cond_frames_in_attn: int = -1
    dtype: str = "float32"
    predictor: str = "per_object"
    strategy: str = "stock"
    segment_frames: int = 0
    stream_prefetch: int = 4
    vision_features_cache: int = 1
    object_batch: int = 1
    image_size: int | None = None  # None = the workload's
    impl: str = "sam2"  # the implementation (``impl=``), not a knob

    @classmethod
    def from_knobs(cls, src: Any, image_size: int | None = None) -> Candidate:
        """The candidate of a ``KnobsConfig``, a results row or Optuna params (a mapping or an
        object with the knob attributes; missing or null knobs take their defaults)."""
        get = src.get if isinstance(src, dict) else (lambda k, d=None: getattr(src, k, d))
        vals: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in _NOT_KNOBS:
                continue
            v = get(f.name, None)
            typ: Any = type(f.default)  # bool / int / str, as KnobsConfig declares them
            vals[f.name] = f.default if v is None or v != v else typ(v)  # NaN: null
        impl = get("impl", None)
        return cls(**vals, image_size=image_size, impl=impl if isinstance(impl, str) else "sam2")

    def knobs(self) -> KnobsConfig:
        """The run's ``knobs`` config for this candidate."""
        from sam2tune.config.schema import KnobsConfig

        names = [f.name for f in dataclasses.fields(self) if f.name not in _NOT_KNOBS]
        return KnobsConfig(**{n: getattr(self, n) for n in names})

    def overrides(self, w: Workload) -> list[str]:
        """The equivalent ``sam2tune run`` overrides."""
        out = [f"model={w.model}", f"model.image_size={self.image_size or w.image_size}"]
        if self.impl != "sam2":
            out.append(f"impl={self.impl}")
        for f in dataclasses.fields(self):
            if f.name in _NOT_KNOBS:
                continue
            v = getattr(self, f.name)
            if v != f.default:
                out.append(f"knobs.{f.name}={str(v).lower() if isinstance(v, bool) else v}")
        return out


#: Candidate fields that are not ``knobs.*``
_NOT_KNOBS = ("image_size", "impl")


def recorded_workload(r: dict[str, Any], rep: dict[str, Any]) -> Workload:
    """The workload a recorded run ran (``r`` its row, ``rep`` its report): its exact prompted
    frames per object and its video's size (270 x 480 where the report does not say)."""
    n = int(r["num_frames"])
    per_obj: dict[int, list[int]] = {}
    for p in rep["prompts"]:
        per_obj.setdefault(p["obj_id"], []).append(int(p["frame"]))
    conds = [sorted(set(v)) for _, v in sorted(per_obj.items())]
    if r["predictor"] == "legacy_batched":  # every object from the first prompted frame
        s0 = min(fs[0] for fs in conds)
        obj_frames = len(conds) * (n - s0)
    else:
        obj_frames = sum(n - fs[0] for fs in conds)
    vid = rep.get("config", {}).get("video", {})
    w = Workload(
        model=r["model"],
        image_size=int(r["image_size"]),
        num_frames=n,
        num_objects=int(r["num_objects"]),
        num_cond_frames=int(r["num_cond_frames"]),
        object_frames=obj_frames,
        weights_bytes=int(r["weights_bytes"]),
        video_height=int(vid.get("height") or 270),
        video_width=int(vid.get("width") or 480),
        cond_frames=conds,
    )
    return w

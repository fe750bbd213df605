"""Deterministic synthetic videos with exact ground truth.

Textured objects (striped / checkered superellipses) move over a textured background, bounce off
the borders and occlude each other (a fixed depth order: a higher object id is in front). With two
or more objects the last one enters from the left edge after the first frame. Ground truth is the
visible part of each object, so masks of one frame are disjoint and a single DAVIS-style label map
per frame (pixel value = object id, 0 = background) holds them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SyntheticSpec", "render_video", "entry_frame"]


def entry_frame(num_frames: int) -> int:
    """The frame where the entering object (the last of two or more) becomes visible."""
    return max(1, num_frames // 4)


@dataclass(frozen=True)
class SyntheticSpec:
    """What a synthetic video is made of: its length, object count, frame size and seed."""

    num_frames: int
    num_objects: int
    height: int
    width: int
    seed: int


@dataclass
class _Obj:
    cx: float
    cy: float
    vx: float
    vy: float
    a: float  # half width
    b: float  # half height
    p: float  # superellipse exponent (2 = ellipse, 4 = rounded box)
    colors: np.ndarray  # (2, 3) float
    angle: float
    period: float
    checker: bool
    entering: bool
    inside: bool


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        acc = np.full((h, w), 0.45, np.float32)
        for _ in range(4):
            fx, fy = rng.uniform(-0.08, 0.08, size=2)
            acc += rng.uniform(0.04, 0.12) * np.sin(fx * xx + fy * yy + rng.uniform(0, 6.28))
        img[..., c] = acc
    img += rng.normal(0, 0.03, size=img.shape).astype(np.float32)
    return img


def _make_objects(spec: SyntheticSpec, rng: np.random.Generator) -> list[_Obj]:
    h, w, n, k = spec.height, spec.width, spec.num_frames, spec.num_objects
    s = min(h, w)
    objs = []
    for i in range(k):
        a = rng.uniform(0.10, 0.16) * s
        b = a * rng.uniform(0.7, 1.3)
        speed = max(1.5, rng.uniform(0.012, 0.025) * w)
        entering = k >= 2 and i == k - 1
        if entering:
            # first visible on frame t_enter (a strip 0.5*vx wide), then moves right, in front
            t_enter = entry_frame(n)
            vx = max(speed * 1.5, 3.0)
            cx = -a + vx * (0.5 - t_enter)
            cy = h * rng.uniform(0.35, 0.65)
            vy = rng.uniform(-0.3, 0.3) * vx
        else:
            # object 0 starts left moving right, object 1 starts right moving left (they cross),
            # others anywhere
            if i == 0:
                cx, dirx = w * 0.3, 1.0
            elif i == 1:
                cx, dirx = w * 0.7, -1.0
            else:
                cx, dirx = w * rng.uniform(0.2, 0.8), rng.choice([-1.0, 1.0])
            cy = h * rng.uniform(0.3, 0.7)
            vx = dirx * speed
            vy = rng.uniform(-0.5, 0.5) * speed
        objs.append(
            _Obj(
                cx=cx,
                cy=cy,
                vx=vx,
                vy=vy,
                a=a,
                b=b,
                p=float(rng.choice([2.0, 4.0])),
                colors=rng.uniform(0.05, 0.95, size=(2, 3)).astype(np.float32),
                angle=rng.uniform(0, np.pi),
                period=rng.uniform(6, 14),
                checker=bool(rng.integers(0, 2)),
                entering=entering,
                inside=not entering,
            )
        )
    return objs


def _step(o: _Obj, h: int, w: int) -> None:
    o.cx += o.vx
    o.cy += o.vy
    if o.entering and not o.inside and o.cx - o.a >= 0:
        o.inside = True
    if o.inside:
        if (o.cx < o.a and o.vx < 0) or (o.cx > w - o.a and o.vx > 0):
            o.vx = -o.vx
    if (o.cy < o.b and o.vy < 0) or (o.cy > h - o.b and o.vy > 0):
        o.vy = -o.vy


def render_video(spec: SyntheticSpec):
    """Yield ``(frame_uint8[h, w, 3], labels_uint8[h, w])`` for every frame.

    ``labels`` is the ground truth: 0 background, ``i + 1`` where object ``i`` is visible.
    """
    if spec.num_objects > 254:
        raise ValueError("video.num_objects: at most 254 objects fit a palette label map")
    rng = np.random.default_rng(spec.seed)
    h, w = spec.height, spec.width
    bg = _background(rng, h, w)
    objs = _make_objects(spec, rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(spec.num_frames):
        img = bg.copy()
        labels = np.zeros((h, w), np.uint8)
        for i, o in enumerate(objs):  # painter's order: later objects in front
            u, v = (xx - o.cx) / o.a, (yy - o.cy) / o.b
            inside = np.abs(u) ** o.p + np.abs(v) ** o.p <= 1.0
            if not inside.any():
                continue
            lx, ly = xx - o.cx, yy - o.cy  # texture moves with the object
            t = lx * np.cos(o.angle) + ly * np.sin(o.angle)
            if o.checker:
                t2 = -lx * np.sin(o.angle) + ly * np.cos(o.angle)
                sel = (np.floor(t / o.period) + np.floor(t2 / o.period)) % 2 == 0
            else:
                sel = np.sin(2 * np.pi * t / o.period) > 0
            tex = np.where(sel[..., None], o.colors[0], o.colors[1])
            img[inside] = tex[inside]
            labels[inside] = i + 1
        noise = rng.normal(0, 0.01, size=img.shape).astype(np.float32)
        frame = np.clip((img + noise) * 255.0, 0, 255).astype(np.uint8)
        yield frame, labels
        for o in objs:
            _step(o, h, w)

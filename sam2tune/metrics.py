"""Mask agreement: per-object IoU (Jaccard, DAVIS's region measure J) and DAVIS's contour
accuracy F over frames, and the masks of a run.

Conventions (DAVIS 2017's evaluation): a frame where both masks are empty scores J = F = 1.0;
F is the F-measure of boundary precision and recall with a tolerance of
``0.008 x image diagonal`` pixels; J&F is the mean of J and F.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "iou",
    "iou_vs_labels",
    "MaskSet",
    "MaskDir",
    "agreement",
    "boundary_f",
    "JF",
    "jf_vs_labels",
    "jf_agreement",
]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of the same shape; 1.0 when both are empty."""
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)


def seg_boundary(seg: np.ndarray) -> np.ndarray:
    """Boundary pixels of a binary mask: where a pixel differs from its right, lower or
    lower-right neighbour (DAVIS's ``seg2bmap`` at the mask's own resolution)."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _disk(r: int) -> np.ndarray:
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y <= r * r).astype(np.uint8)


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """DAVIS's contour accuracy F of ``pred`` against ``gt`` (boolean masks, same shape): the
    F-measure of boundary precision and recall, a boundary pixel matching within
    ``ceil(bound_th x diagonal)`` pixels. Both empty: 1.0; one empty: 0.0."""
    import cv2

    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {gt.shape}")
    r = int(np.ceil(bound_th * np.hypot(*pred.shape)))
    fg, gb = seg_boundary(pred), seg_boundary(gt)
    n_fg, n_gt = int(fg.sum()), int(gb.sum())
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0
    k = _disk(r)
    fg_dil = cv2.dilate(fg.astype(np.uint8), k).astype(bool)
    gt_dil = cv2.dilate(gb.astype(np.uint8), k).astype(bool)
    precision = float((fg & gt_dil).sum()) / n_fg
    recall = float((gb & fg_dil).sum()) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass
class JF:
    """J (region IoU) and F (contour accuracy) per object (means over frames) and J&F per frame
    (mean over objects)."""

    j: dict[int, float]
    f: dict[int, float]
    per_frame: dict[int, float]

    def means(self) -> tuple[float | None, float | None, float | None]:
        """(J mean, F mean, J&F mean) over objects; None without objects."""
        if not self.j:
            return None, None, None
        jm, fm = float(np.mean(list(self.j.values()))), float(np.mean(list(self.f.values())))
        return jm, fm, (jm + fm) / 2


def _jf(pairs) -> JF:
    """``pairs``: (frame, object id, mask a, mask b | None = identical)."""
    js: dict[int, list[float]] = {}
    fs: dict[int, list[float]] = {}
    frame: dict[int, list[float]] = {}
    for t, i, a, b in pairs:
        j, f = (1.0, 1.0) if b is None else (iou(a, b), boundary_f(a, b))
        js.setdefault(i, []).append(j)
        fs.setdefault(i, []).append(f)
        frame.setdefault(t, []).append((j + f) / 2)
    return JF(
        {i: float(np.mean(v)) for i, v in js.items()},
        {i: float(np.mean(v)) for i, v in fs.items()},
        {t: float(np.mean(v)) for t, v in sorted(frame.items())},
    )


def jf_vs_labels(masks, labels, num_frames: int) -> JF:
    """J and F of a run's masks against ground-truth label maps (``labels(t)``: 0 =
    background, else object id; None = frame not annotated), over the annotated frames."""
    empty = np.zeros(masks.shape, bool)

    def pairs():
        for t in range(num_frames):
            lab = labels(t)
            if lab is None:
                continue
            pred = masks.get(t)
            for i in masks.obj_ids:
                yield t, i, pred.get(i, empty), lab == i

    return _jf(pairs())


def jf_agreement(pred, ref, frames: list[int]) -> JF:
    """J and F between two runs' masks over ``frames`` (identical frames score 1.0 without
    unpacking)."""
    ids = sorted(set(pred.obj_ids) | set(ref.obj_ids))
    empty = np.zeros(pred.shape, bool)

    def pairs():
        for t in frames:
            if pred.same_frame(ref, t):
                for i in ids:
                    yield t, i, None, None
                continue
            a, b = pred.get(t), ref.get(t)
            for i in ids:
                yield t, i, a.get(i, empty), b.get(i, empty)

    return _jf(pairs())


def iou_vs_labels(masks, labels, num_frames: int) -> dict[int, float]:
    """Mean IoU per object of a run's masks (:class:`MaskSet` / :class:`MaskDir`) against
    ground-truth label maps (``labels(t)``: 0 = background, else object id; None = frame not
    annotated), over the annotated frames."""
    empty = np.zeros(masks.shape, bool)
    scores: dict[int, list[float]] = {i: [] for i in masks.obj_ids}
    for t in range(num_frames):
        lab = labels(t)
        if lab is None:
            continue
        pred = masks.get(t)
        for i in scores:
            scores[i].append(iou(pred.get(i, empty), lab == i))
    return {i: float(np.mean(v)) for i, v in scores.items() if v}


class MaskSet:
    """Binary masks of a run, frame by frame, bit-packed (1 bit per pixel) to stay small.

    Each frame keeps its own object ids (objects can be added mid-video)."""

    def __init__(self, height: int, width: int) -> None:
        self.shape = (height, width)
        self._frames: dict[int, tuple[tuple[int, ...], np.ndarray]] = {}

    def add(self, frame: int, obj_ids: list[int], masks: np.ndarray) -> None:
        """Store ``masks`` (objects, H, W) bool for ``frame``."""
        self._frames[frame] = (tuple(obj_ids), np.packbits(masks.astype(bool), axis=None))

    @property
    def frames(self) -> list[int]:
        """Frames with masks, in order."""
        return sorted(self._frames)

    @property
    def obj_ids(self) -> list[int]:
        """Every object id seen."""
        return sorted({i for ids, _ in self._frames.values() for i in ids})

    def get(self, frame: int) -> dict[int, np.ndarray]:
        """object id -> mask on ``frame`` (empty dict for a frame never yielded)."""
        if frame not in self._frames:
            return {}
        ids, packed = self._frames[frame]
        n = len(ids) * self.shape[0] * self.shape[1]
        m = np.unpackbits(packed, count=n).astype(bool).reshape(len(ids), *self.shape)
        return {i: m[k] for k, i in enumerate(ids)}

    def same_frame(self, other, frame: int) -> bool:
        """Whether ``other`` holds identical masks on ``frame``."""
        if not isinstance(other, MaskSet):
            return False
        a, b = self._frames.get(frame), other._frames.get(frame)
        return a is not None and b is not None and a[0] == b[0] and np.array_equal(a[1], b[1])

    def save(self, path, key: str = "") -> None:
        """Save compressed; ``key`` (what defines these masks) is stored and checked on load."""
        arrays: dict[str, Any] = {"_shape": np.array(self.shape), "_key": np.array(key)}
        for t, (ids, packed) in self._frames.items():
            arrays[f"f{t}"] = packed
            arrays[f"i{t}"] = np.array(ids, np.int64)
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path, key: str | None = None) -> MaskSet:
        """Load masks saved by :meth:`save`.

        Raises:
            ValueError: the file is damaged, or was saved under another ``key``.
        """
        try:
            z = np.load(path)  # allow_pickle stays off: a mask file holds plain arrays only
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not a mask file (no .npz archive)")
        except Exception as e:  # neither a zip nor .npy (numpy's own text advises pickles)
            what = type(e).__name__
            raise ValueError(f"damaged mask file: not an .npz archive ({what})") from None
        try:
            with z:
                stored = str(z["_key"]) if "_key" in z.files else ""
                if key is not None and stored != key:
                    raise ValueError(f"saved for key {stored or '(none)'!r}, not {key!r}")
                h, w = (int(v) for v in z["_shape"])
                ms = cls(h, w)
                for k in z.files:
                    if k.startswith("f"):
                        t = int(k[1:])
                        ms._frames[t] = (tuple(int(v) for v in z[f"i{t}"]), z[k])
        except ValueError:
            raise
        except Exception as e:  # zip / pickle / key errors: a damaged file
            raise ValueError(f"damaged mask file ({type(e).__name__}: {e})") from None
        return ms


class MaskDir:
    """Masks written to disk as they are produced: ``<root>/<obj_id>/<frame:05d>.png`` (1-bit
    PNG), so a long run keeps none of them in memory. PNG encoding runs on background threads
    behind a bounded queue (at most :attr:`QUEUE` frames waiting, so the propagation loop does
    not pay for it and memory stays bounded); reading flushes the queue first. Same reading
    interface as :class:`MaskSet`."""

    QUEUE = 8  # frames of masks waiting to be written, at most

    def __init__(self, root, height: int, width: int) -> None:
        from pathlib import Path

        self.root = Path(root)
        self.shape = (height, width)
        self._ids: dict[int, tuple[int, ...]] = {}
        self._pool: Any = None
        self._pending: deque[Any] = deque()

    def add(self, frame: int, obj_ids: list[int], masks: np.ndarray) -> None:
        """Queue one frame's masks for writing (waits while :attr:`QUEUE` frames are queued)."""
        from concurrent.futures import ThreadPoolExecutor

        if self._pool is None:
            self._pool = ThreadPoolExecutor(2, thread_name_prefix="sam2tune-masks")
        while len(self._pending) >= self.QUEUE:
            self._pending.popleft().result()
        arrays = [np.array(m, dtype=bool) for m in masks]  # a copy: the caller may reuse its array
        self._pending.append(self._pool.submit(self._write, frame, list(obj_ids), arrays))
        self._ids[frame] = tuple(obj_ids)

    def _write(self, frame: int, obj_ids: list[int], masks: list[np.ndarray]) -> None:
        from PIL import Image

        for i, m in zip(obj_ids, masks, strict=True):
            d = self.root / str(i)
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(m).save(d / f"{frame:05d}.png", optimize=False)

    def flush(self) -> None:
        """Wait until every queued mask is on disk (re-raises a write's error)."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Flush, then stop the writing threads."""
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None

    @property
    def frames(self) -> list[int]:
        """Frames with masks, in order."""
        return sorted(self._ids)

    @property
    def obj_ids(self) -> list[int]:
        """Every object id seen."""
        return sorted({i for ids in self._ids.values() for i in ids})

    def get(self, frame: int) -> dict[int, np.ndarray]:
        """The masks of ``frame`` by object id (read back from disk)."""
        from PIL import Image

        self.flush()
        out = {}
        for i in self._ids.get(frame, ()):
            with Image.open(self.root / str(i) / f"{frame:05d}.png") as im:
                out[i] = np.array(im, dtype=bool)
        return out

    def same_frame(self, other, frame: int) -> bool:
        """Whether ``other`` holds identical masks on ``frame``."""
        return False


def agreement(pred, ref, frames: list[int]) -> dict[int, float]:
    """Mean IoU per object between two runs' masks (:class:`MaskSet` or :class:`MaskDir`) over
    ``frames`` (identical packed frames score 1.0 without unpacking)."""
    ids = sorted(set(pred.obj_ids) | set(ref.obj_ids))
    empty = np.zeros(pred.shape, bool)
    sums = {i: 0.0 for i in ids}
    for t in frames:
        if pred.same_frame(ref, t):
            for i in ids:
                sums[i] += 1.0
            continue
        a, b = pred.get(t), ref.get(t)
        for i in ids:
            sums[i] += iou(a.get(i, empty), b.get(i, empty))
    return {i: s / len(frames) for i, s in sums.items()} if frames else {}

"""Video sources, resolved to what SAM 2's own loader takes (a JPEG folder or an mp4 file) plus
optional ground truth (DAVIS-style palette PNG label maps).

Frames reach SAM 2 through ``init_state(video_path=...)`` exactly as users pass them; this module
only validates inputs, materialises synthetic videos (JPEG frames + PNG labels, cached by spec)
and reads ground truth.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sam2tune.config.schema import VideoConfig
from sam2tune.errors import InputError
from sam2tune.video.synthetic import SyntheticSpec, render_video

__all__ = ["VideoData", "resolve_video", "jpeg_frames"]

#: the frame extensions SAM 2's JPEG-folder loader accepts
_JPEG_EXT = (".jpg", ".jpeg", ".JPG", ".JPEG")


@dataclass
class VideoData:
    """A resolved video: the path SAM 2 loads, its size, and ground truth where there is some."""

    sam2_path: str  # JPEG folder or mp4 file, given to SAM 2's init_state
    num_frames: int  # frames SAM 2 loads
    height: int
    width: int
    source_id: str  # identifies the content (for caching reference masks)
    frame_stems: list[str] = field(default_factory=list)  # frame index -> file stem
    annotations_dir: str | None = None

    @property
    def has_ground_truth(self) -> bool:
        """Whether the video has annotation masks."""
        return self.annotations_dir is not None

    def labels(self, t: int) -> np.ndarray | None:
        """Ground-truth label map of frame ``t`` (0 = background, else object id), or None."""
        if self.annotations_dir is None:
            return None
        stem = self.frame_stems[t] if self.frame_stems else f"{t:05d}"
        p = Path(self.annotations_dir) / f"{stem}.png"
        if not p.exists():
            return None
        return np.array(Image.open(p))

    def object_ids(self) -> list[int]:
        """Ids of every object that appears in any annotation (need not be contiguous)."""
        ids: set[int] = set()
        for t in range(self.num_frames):
            lab = self.labels(t)
            if lab is not None:
                ids.update(int(v) for v in np.unique(lab) if v != 0)
        return sorted(ids)


def jpeg_frames(folder: str | Path) -> list[Path]:
    """The JPEG frames of ``folder`` in SAM 2's order (by ``int(stem)``), as its loader lists them.

    Raises:
        InputError: a frame is not named ``<index>.jpg``.
    """
    frames = [p for p in Path(folder).iterdir() if p.suffix in _JPEG_EXT]
    try:
        frames.sort(key=lambda p: int(p.stem))
    except ValueError:
        bad = next(p.name for p in frames if not p.stem.isdigit())
        raise InputError(
            f"video.path: frame {bad!r} is not named <index>.jpg as SAM 2 requires"
        ) from None
    return frames


def count_frames(video_path: str | Path) -> int:
    """Frames in a JPEG folder (``<index>.jpg``) or an mp4 file, as SAM 2 would load them."""
    p = Path(video_path).expanduser()
    if p.is_dir():
        return len(jpeg_frames(p))
    import cv2

    cap = cv2.VideoCapture(str(p))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    if n <= 0:
        raise InputError(f"video_path: no frames in {str(p)!r} (a JPEG folder or an mp4 file)")
    return n


def _check_annotations(ann: Path, stems: list[str], h: int, w: int) -> None:
    if not ann.is_dir():
        what = "a file, not a folder of masks" if ann.exists() else "no such directory"
        raise InputError(f"video.annotations: {what}: {str(ann)!r}")
    found = 0
    for stem in stems:
        p = ann / f"{stem}.png"
        if not p.exists():
            continue
        found += 1
        try:
            with Image.open(p) as im:
                size, mode = im.size, im.mode
        except Exception as e:
            raise InputError(f"video.annotations: cannot read mask {p.name}: {e}") from None
        if size != (w, h):
            raise InputError(
                f"video.annotations: mask {p.name} is {size[1]}x{size[0]}, frames are {h}x{w}"
            )
        if mode not in ("P", "L"):
            raise InputError(
                f"video.annotations: mask {p.name} has mode {mode}; expected a palette (P) or "
                "grey (L) PNG whose values are object ids"
            )
    if found == 0:
        raise InputError(f"video.annotations: no <index>.png mask matches a frame in {str(ann)!r}")


def _jpeg_dir(cfg: VideoConfig, cache: Path) -> VideoData:
    folder = Path(cfg.path or "").expanduser()
    if not folder.is_dir():
        what = ("a file, not a folder of frames (an .mp4 goes with video=mp4)" if folder.exists()
                else "no such directory")
        raise InputError(f"video.path: {what}: {str(folder)!r}")
    frames = jpeg_frames(folder)
    if not frames:
        raise InputError(f"video.path: no JPEG frames (<index>.jpg) in {str(folder)!r}")
    if cfg.num_frames is not None:
        if cfg.num_frames > len(frames):
            raise InputError(
                f"video.num_frames: {cfg.num_frames}, but {str(folder)!r} has {len(frames)} "
                "frames (leave video.num_frames=null for all)"
            )
        frames = frames[: cfg.num_frames]
    size = None
    for p in frames:
        try:
            with Image.open(p) as im:
                s = im.size
                # decode every frame to its end (at 1/8 scale: the whole entropy-coded stream
                # is still read), so a truncated file is refused before anything runs
                im.draft("RGB", (max(1, s[0] // 8), max(1, s[1] // 8)))
                im.load()
        except Exception as e:
            raise InputError(f"video.path: corrupt frame {p.name}: {e}") from None
        if size is not None and s != size:
            raise InputError(
                f"video.path: frame {p.name} is {s[1]}x{s[0]}, others {size[1]}x{size[0]}"
            )
        size = s
    assert size is not None
    w, h = size
    stems = [p.stem for p in frames]
    ident = hashlib.sha256(
        json.dumps([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in frames]).encode()
    ).hexdigest()[:16]
    sam2_path = str(folder)
    if cfg.num_frames is not None and len(frames) < len(jpeg_frames(folder)):
        # SAM 2 loads a whole folder: give it a folder of links to the first N frames
        sub = cache / "videos" / f"subset-{ident}"
        if not sub.exists():
            tmp = Path(tempfile.mkdtemp(prefix=".subset-", dir=cache / "videos"))
            for p in frames:
                os.symlink(p.resolve(), tmp / p.name)
            _publish(tmp, sub)
        sam2_path = str(sub)
    ann = None
    if cfg.annotations:
        annp = Path(cfg.annotations).expanduser()
        _check_annotations(annp, stems, h, w)
        ann = str(annp)
    return VideoData(sam2_path, len(frames), h, w, f"jpeg:{ident}", stems, ann)


def _mp4(cfg: VideoConfig) -> VideoData:
    import cv2

    path = Path(cfg.path or "").expanduser()
    if not path.is_file():
        raise InputError(f"video.path: no such file: {str(path)!r}")
    if path.suffix not in (".mp4", ".MP4"):
        raise InputError(f"video.path: expected an .mp4 file, got {path.name!r}")
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else 0
    cap.release()
    if not ok or frame is None or n <= 0:
        raise InputError(
            f"video.path: cannot decode any frame of {str(path)!r} (corrupt or empty)"
        )
    h, w = frame.shape[:2]
    if cfg.num_frames is not None and cfg.num_frames > n:
        raise InputError(
            f"video.num_frames: {cfg.num_frames}, but {str(path)!r} has {n} frames (leave "
            "video.num_frames=null for all)"
        )
    if cfg.num_frames is not None and cfg.num_frames < n:
        raise InputError(
            f"video.num_frames: SAM 2 loads a whole mp4 ({n} frames); trim the file or leave "
            "video.num_frames=null"
        )
    st = path.stat()
    ident = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    stems = [f"{t:05d}" for t in range(n)]
    ann = None
    if cfg.annotations:
        annp = Path(cfg.annotations).expanduser()
        _check_annotations(annp, stems, h, w)
        ann = str(annp)
    return VideoData(str(path), n, h, w, f"mp4:{ident[:16]}", stems, ann)


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished temporary folder into place; if another process won, keep theirs."""
    try:
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.exists():
            raise


def _synthetic(cfg: VideoConfig, cache: Path) -> VideoData:
    assert cfg.num_frames is not None
    spec = SyntheticSpec(cfg.num_frames, cfg.num_objects, cfg.height, cfg.width, cfg.seed)
    key = hashlib.sha256(json.dumps(spec.__dict__, sort_keys=True).encode()).hexdigest()[:16]
    root = cache / "videos" / f"synthetic-{key}"
    if not root.exists():
        (cache / "videos").mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=cache / "videos"))
        (tmp / "JPEGImages").mkdir()
        (tmp / "Annotations").mkdir()
        palette = _palette()
        for t, (frame, labels) in enumerate(render_video(spec)):
            Image.fromarray(frame).save(tmp / "JPEGImages" / f"{t:05d}.jpg", quality=95)
            lab = Image.fromarray(labels, mode="P")
            lab.putpalette(palette)
            lab.save(tmp / "Annotations" / f"{t:05d}.png")
        (tmp / "spec.json").write_text(json.dumps(spec.__dict__))
        _publish(tmp, root)
    stems = [f"{t:05d}" for t in range(spec.num_frames)]
    return VideoData(
        str(root / "JPEGImages"),
        spec.num_frames,
        spec.height,
        spec.width,
        f"synthetic:{key}",
        stems,
        str(root / "Annotations"),
    )


def _palette() -> list[int]:
    """DAVIS's colour palette (the bit-interleaved one every VOS toolkit uses)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def resolve_video(cfg: VideoConfig, cache: Path) -> VideoData:
    """Validate the configured video and return what SAM 2 loads plus its ground truth.

    Raises:
        InputError: a missing, empty or corrupt video, or annotations that do not fit it.
    """
    (cache / "videos").mkdir(parents=True, exist_ok=True)
    if cfg.kind == "synthetic":
        return _synthetic(cfg, cache)
    if cfg.kind == "jpeg_dir":
        return _jpeg_dir(cfg, cache)
    return _mp4(cfg)

"""Video sources: synthetic (exact ground truth), JPEG folders with DAVIS-style masks, mp4."""

from sam2tune.video.sources import VideoData, resolve_video
from sam2tune.video.synthetic import SyntheticSpec, render_video

__all__ = ["VideoData", "resolve_video", "SyntheticSpec", "render_video"]

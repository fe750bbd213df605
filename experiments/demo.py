"""Study `demo` (the README's main job): a small sweep on the embedded default, its table
and report.

sam2tune study demo
"""

import pandas as pd

from sam2tune.analysis.conclusions import all_conclusions
from sam2tune.analysis.projection import projection_conclusions

TITLE = "demo: memory vs length, offloading and streaming (synthetic video, SAM 2.1 tiny, 256 px)"
DESCRIPTION = (
    "8 isolated runs: 16 and 48 frames x offload_video_to_cpu off/on x strategy stock/stream, "
    "2 objects (the second enters mid-video). Conclusions below are computed from these rows."
)
SWEEP = ["experiment=sweep_demo"]
FIGURES = [
    "growth_vs_flat",
    "projection_1024",
    "peak_vs_frames",
    "memory_by_role",
    "quality_vs_memory",
    "fps_by_setting",
    "timeline",
]


def conclusions(df: pd.DataFrame) -> list[str]:
    """Every measured conclusion, then the projection to 1024 px and 1-2 minutes (predicted)."""
    return all_conclusions(df) + projection_conclusions(df)

"""Study `bounded_memory`: sam2tune's release / stream strategies vs stock as the video grows.

sam2tune study bounded_memory
"""

from sam2tune.analysis.conclusions import length_conclusions, lossless_conclusions, status_counts

TITLE = "bounded-memory strategies (release, stream) vs stock"
DESCRIPTION = "Sweep: video.num_frames 16,32 x knobs.strategy stock,release,stream; 2 objects."
SWEEP = ["experiment=sweep_bounded"]
FIGURES = ["peak_vs_frames", "memory_by_role", "timeline", "fps_by_setting"]


def conclusions(df):
    return status_counts(df) + length_conclusions(df) + lossless_conclusions(df)

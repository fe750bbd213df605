"""Study `memory_vs_length`: memory vs video length for stock / offload video / offload state /
both; conclusion: the per-frame slope of each, in bytes per frame.

    sam2tune study memory_vs_length [model.image_size=512 ...]
"""

from sam2tune.analysis.conclusions import length_conclusions, lossless_conclusions, status_counts

TITLE = "memory vs video length per offload knob"
DESCRIPTION = "Sweep: video.num_frames 8,16,32 x offload_video_to_cpu x offload_state_to_cpu."
SWEEP = ["experiment=sweep_memory_vs_length"]
FIGURES = ["peak_vs_frames", "memory_by_role", "timeline", "fps_by_setting"]


def conclusions(df):
    return status_counts(df) + length_conclusions(df) + lossless_conclusions(df)

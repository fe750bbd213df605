"""Study `cond_frames`: many annotated frames; memory and agreement vs max_cond_frames_in_attn.

sam2tune study cond_frames
"""

from sam2tune.analysis.conclusions import cond_conclusions, status_counts

TITLE = "conditioning frames in attention (re-prompting every 3 frames)"
DESCRIPTION = (
    "Sweep: knobs.max_cond_frames_in_attn -1,2,4,6 with scenario.reannotate_every=3 on "
    "24 frames, 2 objects: every prompted frame is a conditioning frame."
)
SWEEP = ["experiment=sweep_cond_frames"]
FIGURES = ["memory_by_role", "quality_vs_memory", "fps_by_setting"]


def conclusions(df):
    return status_counts(df) + cond_conclusions(df)

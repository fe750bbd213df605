"""Study `object_count`: memory and fps vs object count, per-object vs legacy batched predictor.

sam2tune study object_count
"""

from sam2tune.analysis.conclusions import object_conclusions, status_counts

TITLE = "memory and fps vs object count (per-object vs legacy batched)"
DESCRIPTION = (
    "Sweep: video.num_objects 1,2,4 x knobs.predictor per_object,legacy_batched; 12 frames."
)
SWEEP = ["experiment=sweep_object_count"]
FIGURES = ["memory_by_role", "fps_by_setting", "quality_vs_memory"]


def conclusions(df):
    return status_counts(df) + object_conclusions(df)

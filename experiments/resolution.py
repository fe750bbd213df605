"""Study `resolution`: memory, fps and agreement with a 512 px reference vs model.image_size.

sam2tune study resolution
"""

from sam2tune.analysis.conclusions import resolution_conclusions, status_counts

TITLE = "input resolution (agreement measured against a 512 px reference)"
DESCRIPTION = "Sweep: model.image_size 256,384,512; probe.reference_image_size=512; 8 frames."
SWEEP = ["experiment=sweep_resolution"]
FIGURES = ["memory_by_role", "quality_vs_memory", "fps_by_setting"]


def conclusions(df):
    return status_counts(df) + resolution_conclusions(df)

"""Study `demo` (the README's main job): a small sweep on the embedded default, its table
and report.

sam2tune study demo
"""

from sam2tune.analysis.conclusions import all_conclusions

TITLE = "demo: memory vs length, offloading and streaming (synthetic video, SAM 2.1 tiny, 256 px)"
DESCRIPTION = (
    "8 isolated runs: 6 and 12 frames x offload_video_to_cpu off/on x strategy stock/stream, "
    "2 objects (the second enters mid-video). Conclusions below are computed from these rows."
)
SWEEP = ["experiment=sweep_demo"]
FIGURES = ["peak_vs_frames", "memory_by_role", "quality_vs_memory", "fps_by_setting", "timeline"]
conclusions = all_conclusions

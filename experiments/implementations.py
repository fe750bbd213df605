"""Study `implementations`: Meta's sam2 vs Hugging Face transformers' SAM 2 video model.

sam2tune study implementations

Same video, prompts and weights (Meta's random-init weights converted onto transformers' model by
name), the memory options each implementation offers, and video length; memory by role (device
estimate, host RSS), speed and agreement with Meta's sam2.
"""

from sam2tune.analysis.conclusions import implementation_conclusions, status_counts
from sam2tune.analysis.projection import projection_conclusions

TITLE = "implementations: Meta's sam2 vs transformers' Sam2VideoModel (same weights)"
DESCRIPTION = (
    "Sweeps at 256 px, 2 objects, synthetic video: impl=sam2,transformers x "
    "offload_video_to_cpu x offload_state_to_cpu x 8 and 24 frames; both implementations at 48 "
    "frames (stock) for the growth per frame; dtype=bfloat16 at 24 frames; transformers' "
    "vision-feature cache 4 and 16 frames; re-prompting every 4 frames with all conditioning "
    "frames vs max_cond_frames_in_attn=2. transformers' runs get Meta's weights converted by "
    "name, and their reference is Meta's sam2 with every knob off, so their iou_ref_mean and "
    "jf_ref_mean measure implementation fidelity. Weights are random-init: agreement is "
    "fidelity, not segmentation quality."
)
SWEEP = ["experiment=sweep_implementations"]
SWEEPS = [
    SWEEP,
    SWEEP + ["video.num_frames=48", "knobs.offload_video_to_cpu=false",
             "knobs.offload_state_to_cpu=false"],
    SWEEP + ["video.num_frames=24", "knobs.dtype=bfloat16", "knobs.offload_video_to_cpu=false",
             "knobs.offload_state_to_cpu=false"],
    SWEEP + ["impl=transformers", "video.num_frames=24", "knobs.vision_features_cache=4,16",
             "knobs.offload_video_to_cpu=false", "knobs.offload_state_to_cpu=false"],
    SWEEP + ["video.num_frames=24", "scenario.reannotate_every=4",
             "knobs.max_cond_frames_in_attn=-1,2", "knobs.offload_video_to_cpu=false",
             "knobs.offload_state_to_cpu=false"],
]
FIGURES = [
    "memory_by_role",
    "peak_vs_frames",
    "fps_by_setting",
    "quality_vs_memory",
    "projection_1024",
]


def conclusions(df):
    return (
        status_counts(df)
        + implementation_conclusions(df)
        + projection_conclusions(df)
        + [
            "transformers on CUDA: no CUDA run of transformers is recorded yet, so its predicted "
            "step activations use sam2's CUDA coefficients (the ratio is fitted on CPU runs "
            "only); its frame and state terms are exact from its code (checked against the "
            "census to within 48 B, the prompts' inputs)."
        ]
    )

"""Peak accelerator and host memory of a SAM 2 video run, term by term.

Exact where SAM 2's code fixes a size (S = image_size, T = (S/16)^2 tokens a frame, N = frames,
K = objects):

* frame cache: ``3 x S^2 x 4`` B per loaded frame (all N for stock/release, the window for
  stream, the segment for segments); on the host with ``offload_video_to_cpu``. SAM 2's loader
  builds the whole cache on the host first and then moves it to the device, so without
  ``offload_video_to_cpu`` the host holds it too while loading (the *loading transient*);
* per object-frame state: ``maskmem_features`` ``64 x T x 2`` B (bf16) + ``pred_masks``
  ``(S/4)^2 x 4`` B + object pointer and score ``256 x 4 + 4`` B, for every tracked object-frame
  (stock) or only for the frames forward propagation still reads plus the conditioning frames
  (release / stream); maskmem and masks on the host with ``offload_state_to_cpu``;
* weights: parameters + buffers (the model preset's ``weights_bytes``);
* **memory tokens** one step's memory attention reads, from SAM 2's own selection
  (``_prepare_memory_conditioned_features``): the conditioning frames
  ``select_closest_cond_frames`` keeps under ``max_cond_frames_in_attn`` + the
  ``num_maskmem - 1`` previous frames that are not selected conditioning frames, T tokens
  each, + 4 tokens per object pointer (selected past conditioning frames + the 15 previous
  frames). Per object (per-object predictor) or for the
  batch (legacy batched predictor), maximised over the video's non-conditioning frames.

Fitted from recorded runs where the code does not fix a size (per device kind, relative least
squares, with the runs they came from):

* cached features ``c_feat x S^2``;
* one step's activation peak = the larger of two phases:
  image encoder ``a_enc x E x S^2`` (E = the Hiera trunk's embed_dim: 96 tiny/small, 112 base+,
  144 large) and memory attention ``a_q x S^2 + tokens x 5,120 B + a_out x (K-1) x S^2`` (per
  object) ``+ (B-1) x (a_bq x S^2 + a_btok x tokens)`` (legacy batch of B). The per-token bytes
  are *not* fitted: they are the K/V projections, rotary copies and concatenated memory SAM 2's
  code allocates per memory token (:attr:`sam2tune.adapter.arch.Arch.token_bytes`); x
  ``bf16_enc`` / ``bf16_mem`` under bfloat16 autocast;
* host: the run process's baseline is *measured on the machine that predicts*
  (:mod:`sam2tune.memory_model.baseline`), plus exact host-resident terms and
  ``h_act x activations + h_px x S^2`` (CPU: the allocator's and oneDNN's share beyond the
  tracked tensors).
"""


from __future__ import annotations

from sam2tune.memory_model.model_file import DEFAULT_MODEL_PATH, REQUIRED_COEFFS, MemoryModel
from sam2tune.memory_model.reads import STREAM_WINDOW, _arch, memory_read
from sam2tune.memory_model.terms import (
    Prediction,
    _resident,
    activation_features,
    activations,
    max_frames_within_budget,
    predict,
)
from sam2tune.memory_model.trust import EXACT_AXES, trust_region, workload_axes
from sam2tune.memory_model.workload import Candidate, Workload

__all__ = [
    "Workload",
    "Candidate",
    "MemoryModel",
    "predict",
    "Prediction",
    "memory_read",
    "activations",
    "activation_features",
    "max_frames_within_budget",
    "trust_region",
    "workload_axes",
    "DEFAULT_MODEL_PATH",
    "REQUIRED_COEFFS",
    "STREAM_WINDOW",
    "EXACT_AXES",
    "_arch",
    "_resident",
]

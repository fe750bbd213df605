"""The code an answer prints: a script that runs as printed once its four edit lines are set.

Every snippet, whatever the implementation and knobs, has the same shape:

* the only lines a user edits, first: ``checkpoint``, ``video_path``, ``prompts`` (one
  well-formed entry per object of the workload, in SAM 2's argument names) and ``device``;
* :func:`sam2tune.build_predictor` with the answer's build-time knobs and
  :func:`sam2tune.propagate` with its run-time knobs (one code path for every configuration:
  ``stock`` is SAM 2's own ``init_state`` + ``propagate_in_video``; a bounded-memory strategy
  never loads the whole video, so the user never calls ``init_state`` themselves);
* a loop that leaves the last frame's index in ``frame_idx`` and its binary masks, objects first,
  in ``masks``.

The test suite executes every variant (``tests/test_answers.py``).
"""

from __future__ import annotations

import math

from sam2tune.memory_model.memory import Candidate, Workload

__all__ = ["snippet", "example_prompts", "EDIT_LINES"]

#: the names a snippet assigns first (the only lines a user edits)
EDIT_LINES = ("checkpoint", "video_path", "prompts", "device")


def example_prompts(w: Workload) -> list[str]:
    """One prompt per object as Python source: a box on a grid over the video's own size, on
    the frame the workload first prompts that object (a point click for every other object, so
    both forms are shown)."""
    k, vw, vh = w.num_objects, w.video_width, w.video_height
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    cw, ch = vw / cols, vh / rows
    firsts = [fs[0] if fs else 0 for fs in w.prompted()]
    out = []
    for i in range(k):
        x0, y0 = (i % cols) * cw, (i // cols) * ch
        f = firsts[i] if i < len(firsts) else 0
        if i % 2 == 0:
            box = [round(x0 + cw * 0.25), round(y0 + ch * 0.25),
                   round(x0 + cw * 0.75), round(y0 + ch * 0.75)]
            out.append(f"    dict(frame_idx={f}, obj_id={i + 1}, box={box}),")
        else:
            pt = [round(x0 + cw / 2), round(y0 + ch / 2)]
            out.append(f"    dict(frame_idx={f}, obj_id={i + 1}, points=[{pt}], labels=[1]),")
    return out


def _build_args(w: Workload, c: Candidate) -> list[str]:
    args = [f'"{w.model}"', "checkpoint", "device", f"image_size={c.image_size or w.image_size}"]
    if c.max_cond_frames_in_attn != -1:
        args.append(f"max_cond_frames_in_attn={c.max_cond_frames_in_attn}")
    if c.predictor != "per_object":
        args.append(f'predictor="{c.predictor}"')
    if c.impl != "sam2":
        args.append(f'impl="{c.impl}"')
        if c.dtype != "float32":
            args.append(f'dtype="{c.dtype}"')
    return args


def _run_args(c: Candidate) -> list[str]:
    args = ["predictor", "video_path", "prompts"]
    if c.strategy != "stock":
        args.append(f'strategy="{c.strategy}"')
    if c.segment_frames:
        args.append(f"segment_frames={c.segment_frames}")
    if c.strategy == "stream":
        args.append(f"prefetch={c.stream_prefetch}")
    if c.offload_video_to_cpu:
        args.append("offload_video_to_cpu=True")
    if c.offload_state_to_cpu:
        args.append("offload_state_to_cpu=True")
    if c.impl == "sam2" and c.dtype != "float32":
        args.append(f'dtype="{c.dtype}"')
    if c.vision_features_cache != 1:
        args.append(f"vision_features_cache={c.vision_features_cache}")
    if c.object_batch != 1:
        args.append(f"object_batch={c.object_batch}")
    return args


def _call(head: str, args: list[str], indent: str) -> list[str]:
    """``head(args)`` on one line when it fits 99 columns, else arguments wrapped at 99."""
    one = f"{head}({', '.join(args)})"
    if len(one) <= 99:
        return [one]
    out, cur = [f"{head}("], indent
    for i, a in enumerate(args):
        piece = a + (", " if i + 1 < len(args) else ")")
        if len(cur) + len(piece.rstrip()) > 99 and cur.strip():
            out.append(cur.rstrip())
            cur = indent
        cur += piece
    out.append(cur.rstrip())
    return out


def _comment(text: str) -> list[str]:
    import textwrap

    return textwrap.wrap(text, 97, initial_indent="# ", subsequent_indent="# ")


def _sam2_builder(w: Workload, c: Candidate) -> str:
    """SAM 2's own call that builds the same predictor (a comment for who wants it)."""
    from sam2tune.config.presets import model_preset

    ov = [f"++model.image_size={c.image_size or w.image_size}"]
    if c.max_cond_frames_in_attn != -1:
        ov.append(f"++model.max_cond_frames_in_attn={c.max_cond_frames_in_attn}")
    if c.predictor == "legacy_batched":
        ov.append("++model._target_=sam2.sam2_video_predictor_legacy.SAM2VideoPredictor")
    return (
        "build_predictor builds SAM 2's own predictor, as sam2.build_sam."
        f'build_sam2_video_predictor("{model_preset(w.model).config_file}", checkpoint, '
        f"device=device, hydra_overrides_extra={ov!r}) does"
    )


def _notes(w: Workload, c: Candidate) -> list[str]:
    """What the knobs are in each library's own terms (comments)."""
    out = []
    if c.impl == "transformers":
        from sam2tune.adapter.hf import hf_settings

        native = ", ".join(hf_settings(c.knobs())) or "its defaults"
        out.append(
            "transformers' Sam2VideoModel with Meta's weights converted by name; in its own "
            f"terms: {native}"
        )
    elif c.strategy == "stock" and not c.segment_frames:
        out.append(_sam2_builder(w, c))
        out.append(
            "strategy stock is SAM 2's own loop: predictor.init_state(video_path, "
            f"offload_video_to_cpu={c.offload_video_to_cpu}, "
            f"offload_state_to_cpu={c.offload_state_to_cpu}), the prompts, "
            "predictor.propagate_in_video(state)"
        )
    else:
        out.append(_sam2_builder(w, c))
        out.append(
            f"strategy={c.strategy}, segment_frames={c.segment_frames}: sam2tune's bounded-memory "
            "mode over SAM 2's own predictor (never call predictor.init_state yourself: it loads "
            "the whole video)"
            + (
                "; stream decodes frames on demand, so offload_video_to_cpu has no frame cache "
                "to move"
                if c.strategy == "stream"
                else ""
            )
        )
    if w.prompt_every:
        out.append(
            f"the answer assumes each object re-prompted every {w.prompt_every} frames: add an "
            "entry per re-prompt (same obj_id, a later frame_idx)"
        )
    return [line for text in out for line in _comment(text)]


def snippet(w: Workload, c: Candidate, checkpoint_name: str, device_kind: str = "cuda") -> str:
    """The answer as a script: the four edit lines, then code that runs unchanged (``device``
    set to the device kind the answer was predicted for)."""
    loop = _call(
        "for frame_idx, obj_ids, mask_logits in sam2tune.propagate", _run_args(c), "        "
    )
    loop[-1] += ":"
    lines = [
        *_comment(f"sam2tune answer: {' '.join(c.overrides(w))}"),
        "# Edit the four lines below; everything after them runs unchanged.",
        f"checkpoint = None  # your Meta checkpoint file ({checkpoint_name}), or None: the "
        f"one `sam2tune download {w.model}` caches",
        'video_path = "video_frames/"  # a folder of <index>.jpg frames, or an .mp4 file',
        "prompts = [  # one per object (SAM 2's names; video pixels): points+labels | box | mask",
        *example_prompts(w),
        "]",
        'device = "cuda"  # or "cpu"' if device_kind == "cuda" else 'device = "cpu"  # or "cuda"',
        "",
        "import sam2tune",
        "",
        *_notes(w, c),
        *_call("predictor = sam2tune.build_predictor", _build_args(w, c), "    "),
        *loop,
        "    masks = (mask_logits[:, 0] > 0.0).cpu().numpy()  # (objects, H, W) bool, by obj_ids",
        "",
        *_comment(f"measured as a sam2tune run: sam2tune run {' '.join(c.overrides(w))}"),
    ]
    return "\n".join(lines) + "\n"

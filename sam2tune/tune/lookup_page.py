"""The per-GPU lookup as one self-contained web page (``index.html``: no server, no network).

Pick a GPU from the catalog, the video length, objects, resolution and prompt period; the page
shows the recommended configuration, its predicted peaks and margin, the trust-region note and the
snippet. Every figure is the lookup table's (computed by :func:`sam2tune.tune.recommend.recommend`,
as ``sam2tune recommend`` answers), formatted in Python the way the CLI prints it, so the page and
the CLI show the same strings.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from sam2tune.units import fmt_bytes

__all__ = ["write_page", "page_rows"]

#: the selectors, in order, and the row fields they pick
_AXES = (
    ("gpu", "GPU"),
    ("video", "video length (30 fps)"),
    ("num_objects", "objects"),
    ("image_size", "resolution (px)"),
    ("prompt_every", "prompts"),
)


def page_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as the page shows them: keys and display strings (CLI formatting)."""
    out = []
    for r in rows:
        d = r["predicted_device_peak_bytes"]
        margin, usable = r.get("margin_bytes"), r["usable_bytes"]
        out.append(
            {
                "key": [str(r[a]) for a, _ in _AXES],
                "config": r["config"],
                "device_peak": fmt_bytes(d) if d is not None else "n/a",
                "host_peak": fmt_bytes(r["predicted_host_peak_bytes"])
                if r["predicted_host_peak_bytes"] is not None
                else "n/a",
                "margin": f"{fmt_bytes(margin)} ({margin / usable:.0%} of the usable budget)"
                if margin is not None
                else "n/a",
                "usable": f"{fmt_bytes(usable)} of {fmt_bytes(r['gpu_bytes'])}",
                "trust": r.get("trust") or "",
                "snippet": r.get("snippet") or "",
                "transformers": _hf_line(r),
                "speed": _speed_line(r),
            }
        )
    return out


def _speed_line(r: dict[str, Any]) -> str:
    fps, e2e = r.get("predicted_fps"), r.get("predicted_end_to_end_s")
    if fps is None or e2e is None:
        return "n/a (no speed model for this device kind, or nothing fits)"
    m, sec = divmod(int(round(e2e)), 60)
    rests = str(r.get("speed_provenance"))
    if r["gpu"].lower() not in rests.lower():
        rests += f"; {r['gpu']} was never calibrated: the calibrated GPU's figure, not scaled"
    return f"{fps:.1f} fps, {m} min {sec} s for {r['num_frames']:,} frames [predicted: {rests}]"


def _hf_line(r: dict[str, Any]) -> str:
    """The best configuration with transformers' Sam2VideoModel, as the page shows it."""
    cfg = r.get("transformers_config")
    if cfg is None:
        return "n/a (a lookup written before impl=transformers)"
    d = r.get("transformers_predicted_device_peak_bytes")
    return cfg if d is None else f"{cfg} (predicted accelerator peak {fmt_bytes(d)})"


def _options(rows: list[dict[str, Any]], field: str) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for r in rows:
        v = str(r[field])
        if field == "prompt_every":
            label = "each object once" if v == "0" else f"every {v} frames"
        elif field == "image_size":
            label = f"{v} px"
        else:
            label = v
        seen.setdefault(v, label)
    return list(seen.items())


#: the page (str.format fields: meta, selects, data, axes)
_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>sam2tune: SAM 2 configuration per GPU</title>
<style>
body{{font-family:sans-serif;max-width:960px;margin:2em auto;line-height:1.45}}
label{{display:inline-block;margin:0 1.2em .6em 0}}
dt{{font-weight:bold;margin-top:.5em}}dd{{margin-left:1.5em}}
pre{{background:#f4f4f4;padding:.8em;overflow-x:auto}}
.note{{color:#555;font-size:90%}}
</style></head><body>
<h1>SAM 2 video segmentation: what fits your GPU</h1>
<p class="note">{meta} The same answers as <code>sam2tune recommend gpu=... 
workload.num_frames=... workload.num_objects=... workload.image_size=...
workload.prompt_every=... host_budget=...</code>. A link can carry the choice:
<code>index.html#gpu=RTX 4090&amp;video=1 min&amp;num_objects=3&amp;image_size=1024&amp;
prompt_every=30</code>.</p>
<form>{selects}</form>
<dl>
<dt>recommended</dt><dd id="config"></dd>
<dt>predicted accelerator peak</dt><dd id="device_peak"></dd>
<dt>margin</dt><dd id="margin"></dd>
<dt>usable GPU memory</dt><dd id="usable"></dd>
<dt>predicted host peak</dt><dd id="host_peak"></dd>
<dt>trust</dt><dd id="trust"></dd>
<dt>expected speed</dt><dd id="speed"></dd>
<dt>best with transformers</dt><dd id="transformers"></dd>
</dl>
<h2>Snippet</h2><pre id="snippet"></pre>
<script>
var ROWS = {data};
var AXES = {axes};
function show() {{
  var key = AXES.map(function (a) {{ return document.getElementById(a).value; }});
  var row = ROWS.find(function (r) {{ return r.key.join("|") === key.join("|"); }});
  ["config", "device_peak", "margin", "usable", "host_peak", "trust", "snippet",
   "transformers", "speed"].forEach(
    function (f) {{ document.getElementById(f).textContent = row ? row[f] : "n/a"; }});
  document.body.setAttribute("data-ready", row ? "1" : "0");
}}
// a link can carry the choice: index.html#gpu=RTX%204090&video=1%20min&num_objects=3&...
decodeURIComponent(location.hash.slice(1)).split("&").forEach(function (kv) {{
  var i = kv.indexOf("="), el = i > 0 ? document.getElementById(kv.slice(0, i)) : null;
  if (el && AXES.indexOf(el.id) >= 0) {{ el.value = kv.slice(i + 1); }}
}});
show();
</script>
</body></html>
"""


def write_page(rows: list[dict[str, Any]], out: Path, host_budget: int) -> Path:
    """Write the self-contained lookup page to ``out`` (atomically)."""
    from sam2tune.paths import atomic_write_text

    e = html.escape
    selects = []
    for field, label in _AXES:
        opts = "".join(
            f'<option value="{e(v)}">{e(lab)}</option>' for v, lab in _options(rows, field)
        )
        selects.append(
            f'<label>{e(label)} <select id="{field}" onchange="show()">{opts}</select></label>'
        )
    data = json.dumps(page_rows(rows), separators=(",", ":")).replace("</", "<\\/")
    meta = (
        f"Model {rows[0]['model']}; host RAM budget {fmt_bytes(host_budget)}; "
        f"{rows[0]['figure']}. Each GPU is budgeted at its usable memory (total minus the CUDA "
        "context and the allocator's headroom, as recommend)."
    )
    page = _PAGE.format(
        meta=e(meta), selects="".join(selects), data=data,
        axes=json.dumps([a for a, _ in _AXES]),
    )
    atomic_write_text(out, page)
    return out

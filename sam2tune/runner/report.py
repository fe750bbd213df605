"""The typed record of one run's work (:class:`RunReport`): what the run process sends back and
``report.json`` holds beside the launcher's row. Light to import: the parent reads it without
loading torch or SAM 2."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sam2tune.runner.propagate import TimelineRow

__all__ = ["RunReport"]


@dataclass
class RunReport:
    """What one run's work produced, as ``report.json`` holds it beside the launcher's row,
    config, video and prompts. Sizes are integer bytes, times seconds."""

    #: the row's measured and estimated figures (``sam2tune.record.COLUMNS`` names)
    measures: dict[str, Any]
    #: one entry per propagated frame: step time, census by role, RSS, CUDA peaks
    timeline: list[TimelineRow]
    #: per object id: IoU / J / F against ground truth and the reference
    per_object: dict[str, dict[str, float | None]]
    #: J&F per frame (mean over objects) against ground truth and the reference
    quality_per_frame: dict[str, dict[str, float] | None]
    #: how the reference was obtained (cached, computed, its key), None without one
    reference: dict[str, Any] | None
    #: provenance: versions, device, CPU / GPU, host baseline, allocator settings
    environment: dict[str, Any]
    impl: str
    #: the hydra_overrides_extra given to SAM 2 (impl=sam2)
    sam2_overrides: list[str]
    #: transformers' session settings (impl=transformers)
    transformers_settings: list[str] | None
    checkpoint_path: str | None
    #: each memory figure's kind: measured / estimated and how
    memory_provenance: dict[str, str]
    #: the census+tracked estimate's parts (bytes) and its method
    estimate: dict[str, Any]
    #: the bounded-memory strategy's figures (frames held, prefetch, waits, masks on disk)
    bounded_memory: dict[str, Any]
    #: what fps was computed from (timed and tracked frames, prompt time)
    speed: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The report's keys, JSON-ready (the one place a run's work is serialised)."""
        return dataclasses.asdict(self)

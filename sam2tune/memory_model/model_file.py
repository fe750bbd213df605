"""The memory model's file: fitted coefficients per device kind with their provenance
(``conf/memory_model.json`` ships one fitted on the committed records)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam2tune.resources import data_dir

if TYPE_CHECKING:
    pass


REQUIRED_COEFFS = ("a_enc", "a_q", "a_out", "c_feat")
DEFAULT_MODEL_PATH = data_dir("conf") / "memory_model.json"


@dataclass
class MemoryModel:
    """Fitted coefficients per device kind (``cpu`` / ``cuda``) with their provenance."""

    coeffs: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)

    def kind(self, device_kind: str) -> tuple[dict[str, float], str]:
        """Coefficients for ``device_kind`` and where they came from (falls back to cpu)."""
        if device_kind in self.coeffs:
            return self.coeffs[device_kind], device_kind
        if "cpu" in self.coeffs:
            return self.coeffs["cpu"], "cpu (no runs on this device kind yet)"
        raise ValueError("memory model: no fitted coefficients (run `sam2tune fit`)")

    def save(self, path: str | Path) -> None:
        """Write coefficients and provenance as JSON (atomically)."""
        from sam2tune.paths import atomic_write_json

        atomic_write_json(Path(path), {"coeffs": self.coeffs, "calibration": self.calibration})

    @classmethod
    def load(cls, path: str | Path | None = None) -> MemoryModel:
        """Read a model file (default: the shipped ``conf/memory_model.json``), validated."""
        p = Path(path) if path else DEFAULT_MODEL_PATH
        try:
            d = json.loads(p.read_text())
            coeffs = d["coeffs"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"model_file: {str(p)!r} is not a memory model ({e})") from None
        for kind, k in coeffs.items():
            missing = [n for n in REQUIRED_COEFFS if n not in k]
            if missing:
                raise ValueError(
                    f"model_file: {str(p)!r} was fitted by an older sam2tune ({kind} lacks "
                    f"{', '.join(missing)}); refit it with `sam2tune fit`"
                )
        return cls(coeffs, d.get("calibration", {}))

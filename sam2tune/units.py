"""Byte sizes: parsed from human strings once, stored as integer bytes, shown in binary units.

Data always holds integer bytes. Display uses MiB / GiB (binary, 2**20 / 2**30) and says so.
Vendor catalog sizes in decimal GB are converted to bytes here, in one place (`gb_to_bytes`).
"""

from __future__ import annotations

import re

__all__ = ["parse_bytes", "fmt_bytes", "gb_to_bytes", "MiB", "GiB"]

KiB = 2**10
MiB = 2**20
GiB = 2**30
_UNITS = {
    "": 1,
    "b": 1,
    "kib": KiB,
    "mib": MiB,
    "gib": GiB,
    "tib": 2**40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
}
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: str | int | float | None, *, name: str = "size") -> int | None:
    """Parse a size such as ``2GiB``, ``512MiB``, ``24GB`` or ``1073741824`` into integer bytes.

    Args:
        value: the text (or a number of bytes); ``None`` / ``""`` / ``"none"`` mean no limit.
        name: the input's name, used in the error message.

    Returns:
        The size in bytes, or ``None`` for no limit.

    Raises:
        ValueError: with a one-line message naming the input, for unparsable, zero or negative
            sizes.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a size such as 2GiB, got {value!r}")
    if isinstance(value, (int, float)):
        return _whole_bytes(name, value, repr(value), unit=False)
    text = str(value).strip()
    if text.lower() in ("", "none", "null"):
        return None
    if text.lower().lstrip("+-") in ("nan", "inf", "infinity"):
        raise ValueError(f"{name}: size must be finite, got {text!r}")
    m = _PATTERN.match(text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(
            f"{name}: cannot parse size {text!r} (expected e.g. 2GiB, 512MiB, 24GB or bytes)"
        )
    unit = m.group(2).lower()
    return _whole_bytes(name, float(m.group(1)) * _UNITS[unit], repr(text), unit=unit != "")


def _whole_bytes(name: str, n: float, shown: str, unit: bool) -> int:
    """A positive, finite size; without a unit it is bytes and must be a whole number (a
    fraction of a byte is a forgotten unit, not a size)."""
    if n != n or n in (float("inf"), float("-inf")):
        raise ValueError(f"{name}: size must be finite, got {shown}")
    if not unit and not float(n).is_integer():
        raise ValueError(
            f"{name}: a size without a unit is bytes and must be a whole number, got {shown} "
            "(give a unit, e.g. 8GiB)"
        )
    if n < 1:
        raise ValueError(f"{name}: size must be positive (at least 1 byte), got {shown}")
    if n > 2**60:
        raise ValueError(f"{name}: at most 1 EiB (2^60 bytes), got {shown}")
    if not unit and n < MiB:  # every size read here is a memory budget: 32 is a lost unit
        raise ValueError(
            f"{name}: a size without a unit is bytes, and {shown} bytes is less than 1 MiB: "
            f"give a unit (did you mean {int(n)}GiB?)"
        )
    return int(n)


def gb_to_bytes(gb: float) -> int:
    """Vendor GB (decimal, 10**9) to bytes: the one place catalog sizes are converted."""
    return int(round(gb * 10**9))


def fmt_bytes(n: int | float | None) -> str:
    """Format bytes for display in binary units, e.g. ``1.50 GiB`` or ``312.0 MiB``."""
    if n is None or n != n:  # None or NaN
        return "n/a"
    n = float(n)
    if abs(n) >= GiB:
        return f"{n / GiB:.2f} GiB"
    if abs(n) >= MiB:
        return f"{n / MiB:.1f} MiB"
    if abs(n) >= KiB:
        return f"{n / KiB:.1f} KiB"
    return f"{int(n)} B"

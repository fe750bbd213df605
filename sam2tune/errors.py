"""Errors a user can fix: printed as one line naming the input, non-zero exit, nothing written."""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input (config value, video, annotations, checkpoint, results dir)."""

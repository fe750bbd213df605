"""Memory model: SAM 2's exact per-frame sizes plus coefficients fitted from recorded runs."""

from sam2tune.memory_model.memory import Candidate, MemoryModel, Workload, predict

__all__ = ["Candidate", "MemoryModel", "Workload", "predict"]

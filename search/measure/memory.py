"""Memory: exact weight bytes come from the runtime backend (the artifact on disk); the peak activation
estimate from the model family (its tensors at a workload)."""
from __future__ import annotations

from .. import families
from ..families.base import ModelShape

MB = 1e6


def activation_bytes(shape: ModelShape, batch_size: int, sequence_length: int) -> int:
    return families.get(shape.family).activation_bytes(shape, batch_size, sequence_length)

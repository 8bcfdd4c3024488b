"""Runtime backends by name. A new runtime (llama.cpp next) is one package here and one line below."""
from __future__ import annotations

from .base import Backend

DEFAULT = "onnxruntime"


def get(name: str = DEFAULT) -> Backend:
    if name == "onnxruntime":
        from .onnxruntime import OnnxRuntime  # imported on demand: onnxruntime is heavy

        return OnnxRuntime()
    raise KeyError(f"no runtime backend {name!r}; available: onnxruntime")

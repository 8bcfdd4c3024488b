"""Runtime backends by name. A new runtime is one package here and one line below."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the base imports torch: naming the runtimes (target files) must not
    from .base import Backend

DEFAULT = "onnxruntime"


def names() -> list[str]:
    return ["onnxruntime", "llama.cpp"]


def get(name: str = DEFAULT) -> Backend:
    if name == "onnxruntime":
        from .onnxruntime import OnnxRuntime  # imported on demand: onnxruntime is heavy

        return OnnxRuntime()
    if name == "llama.cpp":
        from .llama_cpp import LlamaCpp

        return LlamaCpp()
    raise KeyError(f"no runtime backend {name!r}; available: {', '.join(names())}")

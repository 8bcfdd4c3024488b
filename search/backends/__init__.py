"""Runtime backends by name. A new runtime is one package here and one line in _BACKENDS."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the base imports torch: naming the runtimes (target files) must not
    from .base import Backend

# name (a target's device.runtime) -> (its package, its Backend class), imported on demand: runtimes are heavy
_BACKENDS = {"onnxruntime": ("search.backends.onnxruntime", "OnnxRuntime"),
             "llama.cpp": ("search.backends.llama_cpp", "LlamaCpp")}
DEFAULT = "onnxruntime"


def names() -> list[str]:
    return list(_BACKENDS)


def get(name: str = DEFAULT) -> Backend:
    if name not in _BACKENDS:
        raise KeyError(f"no runtime backend {name!r}; available: {', '.join(_BACKENDS)}")
    package, cls = _BACKENDS[name]
    return getattr(importlib.import_module(package), cls)()

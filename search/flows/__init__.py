"""Task kinds by name (flows/base.py is the contract). A new kind is one folder here and one line below."""
from __future__ import annotations

import importlib

from .base import Flow, Start  # noqa: F401  (re-exported: the seam's types)

# name -> the module that defines it (imported on first use: a kind's dependencies, e.g. llama.cpp, load only when a
# run of that kind needs them)
_MODULES = {"classification": "search.flows.text_classification", "causal_lm": "search.flows.causal_lm"}
_REGISTRY: dict[str, Flow] = {}


def register(flow: Flow) -> Flow:
    """Called by a flow's module when it is imported (`register(MyFlow())`)."""
    _REGISTRY[flow.NAME] = flow
    return flow


def add(name: str, module: str) -> None:
    """Make a flow defined outside this package known by name (its module registers it when imported)."""
    _MODULES[name] = module


def names() -> list[str]:
    return list(_MODULES)


def get(name: str) -> Flow:
    if name not in _REGISTRY:
        if name not in _MODULES:
            raise KeyError(f"no task kind {name!r}; registered: {', '.join(_MODULES)}")
        importlib.import_module(_MODULES[name])
    return _REGISTRY[name]

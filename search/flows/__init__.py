"""Task kinds by name (flows/base.py is the contract). A new kind is one folder here and one line below.

A kind's folder holds `flow.py` (its Flow, registered when imported: the run's heavy imports start there) and
`target.py` (light: the runtimes it ships on, and how a target file's workload and budget sections read for it)."""
from __future__ import annotations

import importlib

from .base import Flow, Start  # noqa: F401  (re-exported: the seam's types)

# name -> the package of its folder (imported on first use: a kind's dependencies, e.g. llama.cpp, load only when a
# run of that kind needs them)
_MODULES = {"classification": "search.flows.text_classification", "causal_lm": "search.flows.causal_lm"}
_REGISTRY: dict[str, Flow] = {}


def register(flow: Flow) -> Flow:
    """Called by a flow's module when it is imported (`register(MyFlow())`)."""
    _REGISTRY[flow.NAME] = flow
    return flow


def add(name: str, package: str) -> None:
    """Make a kind whose folder is outside this package known by name (its flow.py registers it when imported)."""
    _MODULES[name] = package


def names() -> list[str]:
    return list(_MODULES)


def of_budget(budget: dict) -> Flow:
    """The flow whose run resolved this budget (its `flow` key; a run made before flows existed: its latency
    objective tells, per-token latency being the language models')."""
    name = budget.get("flow") or ("causal_lm" if budget.get("latency") == "tpot_p99_ms" else "classification")
    return get(name)


def get(name: str) -> Flow:
    if name not in _REGISTRY:
        if name not in _MODULES:
            raise KeyError(f"no task kind {name!r}; registered: {', '.join(_MODULES)}")
        importlib.import_module(_MODULES[name] + ".flow")
    return _REGISTRY[name]


def target_schema(runtime: str):
    """The target.py module of the kind that ships on `runtime`: how a target's workload and budget read."""
    for package in _MODULES.values():
        schema = importlib.import_module(package + ".target")
        if runtime in schema.RUNTIMES:
            return schema
    raise KeyError(f"no task kind ships on runtime {runtime!r}")

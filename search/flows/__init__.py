"""Task kinds by name (flows/base.py is the contract). A new kind is one folder here and one line below.

A kind's folder holds `flow.py` (its Flow, registered when imported: the run's heavy imports start there) and
`inputs.py` (light: the runtimes it ships on, how a target file's workload and budget sections read for it, its
built-in task names, default space, and how its task and space files are loaded and checked before any work)."""
from __future__ import annotations

import importlib
import os

from .base import Flow

DEFAULT = "classification"  # the kind of a task file that names no task_type

# name -> the package of its folder (imported on first use: a kind's dependencies, e.g. llama.cpp, load only when a
# run of that kind needs them)
_MODULES = {"classification": "search.flows.text_classification", "causal_lm": "search.flows.causal_lm",
            "image_classification": "search.flows.image_classification"}
# kinds whose folders live outside this package, for every command of a process: NAME=PACKAGE[,NAME=PACKAGE...]
PLUGINS = "SEARCH_FLOWS"
for _item in filter(None, os.environ.get(PLUGINS, "").split(",")):
    _name, _, _package = _item.partition("=")
    _MODULES.setdefault(_name.strip(), _package.strip() or _name.strip())
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


def of_budget(budget: dict, where="budget.json") -> Flow:
    """The flow whose run resolved this budget (its `flow` key; a run made before flows existed: its latency
    objective tells, per-token latency being the language models'). A kind this process does not know is a
    ConfigError naming `where`."""
    from ..errors import ConfigError

    name = budget.get("flow") or ("causal_lm" if budget.get("latency") == "tpot_p99_ms" else "classification")
    if name not in _MODULES:
        raise ConfigError(where, "budget.flow", f"{name!r}: no such task kind here (known: {', '.join(_MODULES)}); "
                                                f"name its package in {PLUGINS}=NAME=PACKAGE, or restore the file")
    return get(name)


def _module(name: str, part: str):
    if name not in _MODULES:
        raise KeyError(f"no task kind {name!r}; registered: {', '.join(_MODULES)}")
    return importlib.import_module(f"{_MODULES[name]}.{part}")


def get(name: str) -> Flow:
    if name not in _REGISTRY:
        _module(name, "flow")  # registers it
    return _REGISTRY[name]


def inputs(name: str):
    """The kind's inputs.py (light: nothing heavy is imported)."""
    return _module(name, "inputs")


def for_runtime(runtime: str) -> str:
    """The kind that ships on `runtime` (the first registered one: a target file names no kind)."""
    for name in _MODULES:
        if runtime in inputs(name).RUNTIMES:
            return name
    raise KeyError(f"no task kind ships on runtime {runtime!r}")


def of_workload(runtime: str, workload) -> list[str]:
    """The kinds shipping on `runtime` whose workload reader accepts `workload` (a target's mapping): a text and an
    image target both run on onnxruntime, and their workloads tell them apart."""
    from ..errors import ConfigError
    from ..schema import Reader

    accepted = []
    for name in _MODULES if isinstance(workload, dict) else ():
        if runtime not in inputs(name).RUNTIMES:
            continue
        reader = Reader("<workload>", workload)
        try:
            inputs(name).read_workload(reader)
            reader.done()
        except ConfigError:
            continue
        accepted.append(name)
    return accepted


def of_task(arg: str | None, tasks_dir) -> str | None:
    """The kind a `--task` names: a kind's built-in task name, or a task file's `task_type` (none: the default
    kind). None when no task is given, or when the file cannot be read (its loader then says why, in one line)."""
    from ..errors import ConfigError
    from ..schema import load_yaml, resolve

    if arg is None:
        return None
    for name in _MODULES:
        if arg in inputs(name).BUILTIN_TASKS:
            return name
    path = resolve(arg, tasks_dir)
    try:
        raw = load_yaml(path, "task") if path.is_file() else None
    except ConfigError:
        return None
    given = raw.get("task_type", DEFAULT) if isinstance(raw, dict) else DEFAULT
    if not isinstance(given, str) or given not in _MODULES:
        raise ConfigError(path, "task_type", f"got {given!r}; one of {', '.join(_MODULES)} (none: {DEFAULT})")
    return given

"""Model families by name, and the family of a given model. A new family is registered here."""
from __future__ import annotations

from .base import Family, ModelShape  # noqa: F401  (re-exported: the seam's types)
from .bert_cls import BertClassifier
from .efficientnet_lite import EfficientNetLite
from .llama_lm import LlamaLM

_REGISTRY: dict[str, Family] = {}
DEFAULT = BertClassifier.name  # the family of the built-in task and of task files that name none


def register(family: Family) -> Family:
    _REGISTRY[family.name] = family
    return family


register(BertClassifier())
register(LlamaLM())
register(EfficientNetLite())


def names(task_type: str | None = None) -> list[str]:
    return [n for n, f in _REGISTRY.items() if task_type is None or task_type in f.task_types]


def get(name: str) -> Family:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no model family {name!r}; registered: {', '.join(_REGISTRY)}") from None


def of(model) -> Family:
    """The family a model belongs to (compressors ask this instead of reaching into the model)."""
    for family in _REGISTRY.values():
        if family.matches(model):
            return family
    raise TypeError(f"{type(model).__name__} belongs to no registered model family ({', '.join(_REGISTRY)})")

"""A stored GGUF priced for another target (replan.py): its quality against the teacher does not depend on the
device; its speed and memory do. Estimated targets: the decode estimate from the trial's shape and GGML types;
measured targets: the stored GGUF measured again there in a fresh llama.cpp process."""
from __future__ import annotations

from pathlib import Path

from ... import families
from ...families.base import ModelShape
from ...measure import decode
from . import pipeline
from .recipe import LMRecipe


def reprice(attrs: dict, saved: dict, target, artifact: Path, locks: Path) -> dict:
    """Speed, memory and the KV cache of one stored GGUF (the teacher's where `attrs` has no recipe) on `target`."""
    family = families.get(saved["family"])
    teacher_shape = ModelShape.from_json(saved["teacher_shape"])
    if attrs.get("recipe") is None:  # the teacher: its F32 GGUF
        shape, recipe = teacher_shape, pipeline.teacher_recipe(family, teacher_shape)
    else:
        recipe = LMRecipe.from_json(attrs["recipe"])
        shape = pipeline.planned_shape(teacher_shape, recipe)
    return {**pipeline.speed(family, target, locks, artifact, shape, recipe),
            "kv_cache_mb": decode.kv_bytes(shape, target.workload.context_tokens) / 2**20}

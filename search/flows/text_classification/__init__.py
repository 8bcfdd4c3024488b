"""Text classification (an encoder with a classifier head, e.g. MiniLM) shipped as an ONNX artifact: distill a student
of a sampled shape, prune it, quantize it, measure accuracy on the validation split and speed and memory on the
target (pipeline.py)."""
from __future__ import annotations

from ...tasks import classification
from .. import register
from ..base import Flow
from . import pipeline


class TextClassification(Flow):
    NAME = classification.NAME
    prepare_run = staticmethod(pipeline.prepare_run)
    resolve = staticmethod(pipeline.resolve)
    screen = staticmethod(pipeline.screen)
    run_candidate = staticmethod(pipeline.run_candidate)
    measure_teacher = staticmethod(pipeline.measure_teacher)
    warm_start = staticmethod(pipeline.warm_start)
    more_training = staticmethod(pipeline.more_training)
    variants = staticmethod(pipeline.variants)
    as_built = staticmethod(pipeline.as_built)
    solved_for_target = staticmethod(pipeline.solved_for_target)


register(TextClassification())

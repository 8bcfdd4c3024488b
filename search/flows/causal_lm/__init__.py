"""A causal language model shipped as a GGUF for llama.cpp: cut the teacher (depth, FFN width, KV head groups),
recover by distillation, quantize with a GGML type per tensor class, measure KL divergence to the teacher in
llama.cpp and speed and memory on the target (pipeline.py)."""
from __future__ import annotations

from ...tasks import causal_lm
from .. import register
from ..base import Flow
from . import pipeline


class CausalLM(Flow):
    NAME = causal_lm.NAME
    prepare_run = staticmethod(pipeline.prepare_run)
    resolve = staticmethod(pipeline.resolve)
    screen = staticmethod(pipeline.screen)
    run_candidate = staticmethod(pipeline.run_candidate)
    measure_teacher = staticmethod(pipeline.measure_teacher)
    warm_start = staticmethod(pipeline.warm_start)


register(CausalLM())

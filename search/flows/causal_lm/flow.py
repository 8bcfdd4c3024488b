"""A causal language model shipped as a GGUF for llama.cpp: cut the teacher (depth, FFN width, KV head groups),
recover by distillation, quantize with a GGML type per tensor class, measure KL divergence to the teacher in
llama.cpp and speed and memory on the target (pipeline.py)."""
from __future__ import annotations

from dataclasses import asdict

from ...objectives import QUALITY, TPOT_P99, TTFT
from ...run_dir import atomic_replace_dir
from ...tasks import causal_lm
from .. import register
from ..base import Flow, slice_budget
from . import pipeline
from .reprice import reprice as _reprice


class CausalLM(Flow):
    NAME = causal_lm.NAME
    METRIC_COLUMNS = ("kld_mean", "kld_mean_se", "kld_p99", "top1_agreement", "top1_agreement_se", "perplexity",
                      "perplexity_se", "perplexity_ratio", "perplexity_ratio_se", "se_windows", "tpot_p99_ms_upper",
                      "latency_bound_method", "memory_mb", "peak_rss_mb", "weight_mb", "kv_cache_mb", "file_mb",
                      "bits_per_weight", "ttft_ms", "tpot_p50_ms", "tpot_p99_ms", "prefill_tok_s", "decode_tok_s",
                      "latency_spread", "latency_noisy", "latency_source", "layers", "parameters", "types",
                      "types_written", "recovery_steps", "recovery_kl_first", "recovery_kl_last",
                      "predicted_memory_mb", "predicted_tpot_p99_ms", "predicted_ttft_ms", "student_s", "elapsed_s",
                      "train_device")
    TOKENIZED = True
    SUMMARY_KEYS = ("kld_mean", "kld_mean_se", "top1_agreement", "perplexity_ratio", "memory_mb", "ttft_ms",
                    "tpot_p50_ms", "tpot_p99_ms", "file_mb", "latency_source", "types", "types_written")
    prepare_run = staticmethod(pipeline.prepare_run)

    def prepare(self, task, cache_dir, log, checked):
        from .task import prepare

        return prepare(task, cache_dir, log=log)

    resolve = staticmethod(pipeline.resolve)
    screen = staticmethod(pipeline.screen)
    run_candidate = staticmethod(pipeline.run_candidate)
    measure_teacher = staticmethod(pipeline.measure_teacher)
    warm_start = staticmethod(pipeline.warm_start)

    def resolved_budget(self, target, teacher: dict) -> dict:
        b = target.budget  # an absolute limit on one of the causal_lm objectives
        q = next(o for o in QUALITY.values() if o.budget_key == b.quality_limit.key)
        out = {"memory_mb": b.memory_mb, TPOT_P99.budget_key: b.tpot_p99_ms, "latency": TPOT_P99.name,
               "quality": q.name, q.budget_key: b.quality_limit.value, f"{q.budget_key}_rule": b.quality_limit.describe()}
        if b.ttft_ms is not None:
            out[TTFT.budget_key] = b.ttft_ms
        # an absolute limit: the same on every slice the task names (each language must stay within it)
        return out | {"confidence": b.confidence, "flow": self.NAME} | slice_budget(q, teacher,
                                                                                    lambda name, v: b.quality_limit.value)

    def metrics_text(self, m: dict, source: str) -> str:
        return (f"KLD {m['kld_mean']:.4f}  top1 {m['top1_agreement']:.3f}  ppl x{m['perplexity_ratio']:.3f}  "
                f"TTFT {m['ttft_ms']:.0f} ms  TPOT p99 {m['tpot_p99_ms']:.2f} ms{source}  mem {m['memory_mb']:.1f} MB  "
                f"file {m['file_mb']:.1f} MB")

    def run_inputs(self, rd, prepared, target) -> dict:
        atomic_replace_dir(prepared.tokenizer.save_pretrained, rd.tokenizer_dir)
        w = prepared.windows
        return {**self.workload_inputs(target), "hf_auto_class": prepared.family.hf_auto_class, "classes": None, "max_length": None,
                "teacher_note": prepared.task.teacher_note,
                "quality_source": f"measured: this GGUF in llama.cpp against the fp32 teacher on {w.ids.shape[0]} "
                                  f"windows of {w.length} tokens of {prepared.task.evaluation_text} "
                                  f"({w.ids.shape[0] * w.scored_tokens} scored tokens)"}

    def workload_inputs(self, target) -> dict:
        return {"workload": asdict(target.workload)}

    reprice = staticmethod(_reprice)


register(CausalLM())

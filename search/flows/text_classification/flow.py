"""Text classification (an encoder with a classifier head, e.g. MiniLM) shipped as an ONNX artifact: distill a student
of a sampled shape, prune it, quantize it, measure accuracy on the validation split and speed and memory on the
target (pipeline.py)."""
from __future__ import annotations

from ...objectives import slice_values
from ...run_dir import atomic_replace_dir, atomic_write_npy
from ...tasks import classification
from .. import register
from ..base import Flow, slice_budget
from . import pipeline
from .inputs import check_slice_floors
from .reprice import reprice as _reprice


class TextClassification(Flow):
    NAME = classification.NAME
    METRIC_COLUMNS = ("accuracy", "macro_f1", "memory_mb", "weight_mb", "activation_mb_estimated", "peak_rss_mb",
                      "p50_latency_ms", "p99_latency_ms", "latency_spread", "latency_noisy", "latency_source",
                      "weight_sparsity", "parameters", "predicted_memory_mb", "predicted_p99_latency_ms", "elapsed_s",
                      "train_device", "p99_latency_ms_upper", "latency_bound_method", "eval_examples")
    TOKENIZED = True
    SUMMARY_KEYS = ("accuracy", "memory_mb", "p50_latency_ms", "p99_latency_ms", "latency_source")
    prepare_run = staticmethod(pipeline.prepare_run)

    def prepare(self, task, cache_dir, log, checked):
        from ...tasks.teacher import prepare

        return prepare(task, cache_dir, log=log, frame=checked)

    resolve = staticmethod(pipeline.resolve)
    screen = staticmethod(pipeline.screen)
    run_candidate = staticmethod(pipeline.run_candidate)
    measure_teacher = staticmethod(pipeline.measure_teacher)
    warm_start = staticmethod(pipeline.warm_start)
    more_training = staticmethod(pipeline.more_training)
    variants = staticmethod(pipeline.variants)
    as_built = staticmethod(pipeline.as_built)
    solved_for_target = staticmethod(pipeline.solved_for_target)

    def resolved_budget(self, target, teacher: dict) -> dict:
        b, quality = target.budget, classification.OBJECTIVE  # a floor relative to the teacher, made absolute
        check_slice_floors(target, list(slice_values(teacher, quality.name)), "the run's task")  # a replan's target
        return {"memory_mb": b.memory_mb, "p99_latency_ms": b.p99_latency_ms, "quality": quality.name,
                quality.budget_key: round(b.accuracy_floor.resolve(teacher[quality.name]), 6),
                f"{quality.budget_key}_rule": b.accuracy_floor.describe(), "confidence": b.confidence,
                "flow": self.NAME,
                **slice_budget(quality, teacher, lambda name, value: b.accuracy_floor.on_slice(name).resolve(value)),
                **({"slices_rule": {name: f.describe() for name, f in b.accuracy_floor.slices}}
                   if b.accuracy_floor.slices else {})}

    def metrics_text(self, m: dict, source: str) -> str:
        return (f"acc {m['accuracy']:.4f}  p50 {m['p50_latency_ms']:.2f} ms  p99 {m['p99_latency_ms']:.2f} ms{source}  "
                f"mem {m['memory_mb']:.2f} MB")

    def run_inputs(self, rd, prepared, target) -> dict:
        atomic_replace_dir(prepared.tokenizer.save_pretrained, rd.tokenizer_dir)
        atomic_write_npy(rd.labels, prepared.val.labels.numpy())  # what each trial's predictions are scored against
        if prepared.val_slices is not None:  # and on which slice each example is (the per-slice bounds)
            atomic_write_npy(rd.slices, prepared.val_slices)
        return {"hf_auto_class": prepared.family.hf_auto_class, "classes": prepared.classes, "max_length": prepared.task.max_length, **self.workload_inputs(target)}

    def workload_inputs(self, target) -> dict:
        return {"batch_size": target.workload.batch_size, "sequence_length": target.workload.sequence_length}

    reprice = staticmethod(_reprice)


register(TextClassification())

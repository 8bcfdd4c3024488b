"""A stored classifier trial priced for another target (replan.py): its accuracy does not depend on the device; its
latency and memory do. Estimated targets: the roofline and the activation estimate from the trial's shape and
recipe, the weight bytes as measured; measured targets: the stored artifact measured again there."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ... import backends, confidence
from ...candidate import Candidate, DistillParams, PruneParams, QuantParams
from ...families.base import ModelShape
from ...locks import latency_lease
from ...measure import memory, roofline


def trial_shape(attrs: dict, teacher_shape: ModelShape) -> ModelShape:
    """The shipped model's shape: as recorded, or (a run made before shapes were recorded) rebuilt from the
    recipe and the per-layer heads and FFN widths it measured. The vocabulary does not enter what a replan
    prices (the weight bytes are measured), so the teacher's stands in there."""
    if "shape" in attrs:
        return ModelShape.from_json(attrs["shape"])
    from .pipeline import planned_shape

    shape = planned_shape(teacher_shape, candidate(attrs))
    return replace(shape, heads=tuple(attrs["heads_per_layer"]), ffn=tuple(attrs["ffn_per_layer"]))


def candidate(attrs: dict) -> Candidate:
    r = attrs["recipe"]
    quant = QuantParams(**r["quant"])
    solved = (attrs.get("precision_solver") or {}).get("layer_options")
    if solved:  # the per-layer precision the artifact was built with
        quant = replace(quant, layer_options=tuple(tuple(o) for o in solved))
    return Candidate(DistillParams(**r["distill"]), PruneParams(**r["prune"]), quant)


def reprice(attrs: dict, saved: dict, target, artifact: Path, locks: Path) -> dict:
    """Memory and latency of one stored artifact (the teacher's where `attrs` has no recipe) on `target`, with the
    latency's upper bound."""
    teacher_shape = ModelShape.from_json(saved["teacher_shape"])
    if attrs.get("recipe") is None:  # the teacher: fp32, unpruned
        shape = ModelShape.from_json(attrs.get("shape", saved["teacher_shape"]))
        quant, sparse_2_4 = QuantParams(bits=32), False
    else:
        cand = candidate(attrs)
        shape, quant, sparse_2_4 = trial_shape(attrs, teacher_shape), cand.quant, cand.prune.type == "2:4"
    wl, dev = target.workload, target.device
    activations = memory.activation_bytes(shape, wl.batch_size, wl.sequence_length) / memory.MB
    if dev.latency == "estimated":
        lat = roofline.estimate(shape, quant, dev, wl.batch_size, wl.sequence_length, sparse_2_4)
        mem = attrs["weight_mb"] + activations
    else:  # the inputs a student accepts are the teacher's (its tokenizer)
        backend = backends.get(saved.get("backend", backends.DEFAULT))
        with latency_lease(locks, dev.runner):  # one measurement per host/device at a time, as in a run
            lat = backend.measure_latency(artifact, teacher_shape, wl.batch_size, wl.sequence_length, dev.threads,
                                          runner=dev.runner)
        mem = lat.peak_rss_mb
    upper, how = confidence.latency_bound(lat.p99_ms, lat.times_ms, lat.source, dev, target.budget.confidence)
    return {"memory_mb": mem, "weight_mb": attrs["weight_mb"], "activation_mb_estimated": activations,
            "peak_rss_mb": lat.peak_rss_mb, "p50_latency_ms": lat.p50_ms, "p99_latency_ms": lat.p99_ms,
            "latency_spread": lat.spread, "latency_noisy": lat.noisy, "latency_source": lat.source,
            "latency_detail": lat.detail, "p99_latency_ms_upper": upper, "latency_bound_method": how}

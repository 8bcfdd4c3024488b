"""Estimated speed and memory of a language model in llama.cpp on a device we only have the spec of.

Decode (one output token) reads every weight once, plus the KV cache written so far: it is bound by memory
bandwidth, so time per output token = bytes read / (bandwidth x efficiency). Prefill of the prompt is bound by
compute: the family's operators' FLOPs over the prompt / (peak x efficiency), or by reading the weights once,
whichever is slower. Memory = the tensors as resident in llama.cpp (repacked types twice: backends/llama_cpp/
mixes.py) + the KV cache allocated at the context length + llama.cpp's compute buffers and library
(RUNTIME_OVERHEAD_MB, measured here). p99 = p50 x the target's tail factor.
Always labelled `estimated`; `bench published` checks it against published tokens-per-second figures.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import families
from ..families.base import ModelShape
from ..target import DeviceSpec, LMWorkload
from . import roofline

# llama.cpp's compute and output buffers and the file's metadata on top of tensors + KV cache: peak RSS of the probe
# minus those two, measured here (llama-cpp-python 0.3.36, 2 threads, context 2048, batch 512) on SmolLM2-135M
# GGUFs without repacked types: 27.7 MB for the F32 teacher, 28.4 and 28.7 MB for two cut students at ~6-7 bits per
# weight, 26.5 MB for Q8_0 (bench llm)
RUNTIME_OVERHEAD_MB = 28.5
FLOAT_TYPES = ("F32", "F16", "BF16")


@dataclass(frozen=True)
class LMEstimate:
    ttft_ms: float
    tpot_p50_ms: float
    tpot_p99_ms: float
    memory_mb: float
    detail: str


def kv_bytes(shape: ModelShape, tokens: int) -> int:
    return families.get(shape.family).kv_cache_bytes(shape, tokens)


def memory_mb(shape: ModelShape, tensor_bytes: int, workload: LMWorkload) -> float:
    return (tensor_bytes + kv_bytes(shape, workload.context_tokens)) / 2**20 + RUNTIME_OVERHEAD_MB


def estimate(shape: ModelShape, tensor_bytes: int, decode_bytes: int, types: set, device: DeviceSpec,
             workload: LMWorkload) -> LMEstimate:
    """`tensor_bytes`: every tensor of the GGUF as resident in memory; `decode_bytes`: what one decode step reads (every block
    weight and the output head, which for tied embeddings is the embedding table; not the input lookup)."""
    mem_mb = memory_mb(shape, tensor_bytes, workload)
    if device.memory_bandwidth_gbps is None:  # a measured device without a spec: memory only
        return LMEstimate(float("nan"), float("nan"), float("nan"), mem_mb, "no spec to estimate speed from")
    bandwidth = device.memory_bandwidth_gbps * 1e9 * device.bandwidth_efficiency
    # the KV cache read by the average generated token: the prompt plus half the reply
    kv_read = kv_bytes(shape, workload.prompt_tokens + workload.gen_tokens // 2)
    tpot_s = (decode_bytes + kv_read) / bandwidth
    # quantized matmuls run on int8 dot products (llama.cpp quantizes activations to 8 bits); float ones at fp32
    precision = "fp32" if types <= set(FLOAT_TYPES) else "int8"
    peak_tops = device.peak_tops.get(precision) or device.peak_tops.get("fp32")
    if peak_tops is None:  # bandwidth given, no compute peak: decode estimated, prefill not
        peak_tops = float("nan")
    peak = peak_tops * 1e12 * roofline.efficiency(device, {"precision": precision})
    flops = sum(op.flops for op in families.get(shape.family).operators(shape, 1, workload.prompt_tokens))
    ttft_s = max(flops / peak, decode_bytes / bandwidth)
    how = device.calibration or "assumed, uncalibrated factors"
    return LMEstimate(
        ttft_ms=ttft_s * 1e3, tpot_p50_ms=tpot_s * 1e3, tpot_p99_ms=tpot_s * 1e3 * device.tail_factor,
        memory_mb=mem_mb,
        detail=f"decode: {(decode_bytes + kv_read) / 2**20:.1f} MB read per token at {device.memory_bandwidth_gbps:g} "
               f"GB/s x {device.bandwidth_efficiency}; prefill: {flops / 1e9:.1f} GFLOP at {precision} peak x "
               f"{roofline.efficiency(device, {'precision': precision})} ({how}); p99 = p50 x {device.tail_factor}; "
               f"memory: tensors + KV cache at {workload.context_tokens} tokens + {RUNTIME_OVERHEAD_MB:g} MB runtime")

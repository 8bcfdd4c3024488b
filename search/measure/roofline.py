"""Estimated latency for a device we only have the spec of: a per-operator roofline.

Each operator takes max(FLOPs / (peak x efficiency), bytes / (bandwidth x efficiency)) plus a fixed
launch overhead, and a block-quantized one a cost per weight block (small blocks cost more than their bytes);
p99 = p50 x the target's stated tail factor. Always labelled `estimated`.
"""
from __future__ import annotations

from dataclasses import replace

from .. import families
from ..candidate import QuantParams, Scheme
from ..compress.grid import blocked_bytes
from ..compress.weight_only import HIGH_BITS
from ..families.base import ModelShape
from ..target import DeviceSpec
from .latency import Latency


def _precision(quant: QuantParams) -> tuple[str, str, float]:
    """(peak precision, kernel class, weight bytes per element) of the Linear layers.

    The kernel class keys the efficiency factor: weight-only kernels run at their own efficiency,
    different per bit width, so calibration fits them apart from the dense ones."""
    scheme = quant.scheme
    if scheme is Scheme.FP32:
        return "fp32", "fp32", 4.0
    if scheme is Scheme.INT8_DYNAMIC:
        return "int8", "int8", 1.0
    if scheme is Scheme.INT8_STATIC:  # QDQ on the unfused graph: its own efficiency and overheads
        return "int8", "int8_static", 1.0
    # weight-only: dequantized to fp16 in the kernel (GPU), weights read at `bits`
    return "fp16", f"w{quant.bits}", quant.bits / 8


def operators(shape: ModelShape, quant: QuantParams, batch: int, seq: int, sparse_2_4: bool) -> list[dict]:
    """Every kernel of one forward pass (the family's operators) with its FLOPs, bytes moved and compute
    precision under this recipe (mixed precision: the most sensitive layers' linears at 8 bits, or each layer's
    solver-chosen bits)."""
    n_high = round(quant.high_precision_fraction * shape.layers) if quant.scheme is Scheme.WEIGHT_ONLY else 0
    out = []
    for op in families.get(shape.family).operators(shape, batch, seq):
        if not op.linear:
            out.append({"name": op.name, "flops": op.flops, "bytes": op.activation_bytes, "precision": "fp32"})
            continue
        if quant.layer_options is not None and op.layer >= 0:  # the solver's per-layer choice
            layer_quant = quant.for_layer(op.layer)
        else:
            layer_quant = replace(quant, bits=HIGH_BITS) if 0 <= op.layer < n_high else quant
        prec, kernel, wbytes = _precision(layer_quant)
        blocks, weight_bytes = 0, wbytes * op.weight_elements
        if layer_quant.scheme is Scheme.WEIGHT_ONLY:  # stored as the backend writes it: K padded, a scale per block
            if not op.in_features:
                raise ValueError(f"{shape.family} operator {op.name}: a linear needs in_features for its blocks")
            blocks, weight_bytes = blocked_bytes(op.in_features, op.weight_elements // op.in_features,
                                                 layer_quant.bits, layer_quant.group_size)
        out.append({"name": op.name, "flops": op.flops, "bytes": weight_bytes + op.activation_bytes,
                    "precision": prec, "kernel": kernel, "sparse": sparse_2_4, "blocks": blocks})
    return out


def estimate(shape: ModelShape, quant: QuantParams, device: DeviceSpec, batch: int, seq: int,
             sparse_2_4: bool = False) -> Latency:
    bandwidth = device.memory_bandwidth_gbps * 1e9 * device.bandwidth_efficiency
    total_s = 0.0
    ops = operators(shape, quant, batch, seq, sparse_2_4)
    for op in ops:
        # a precision the spec does not list runs at the fp32 rate
        peak = device.peak_tops.get(op["precision"], device.peak_tops["fp32"]) * 1e12 * efficiency(device, op)
        if op.get("sparse") and op["precision"] in ("int8", "fp16"):
            peak *= device.sparse_2_4_speedup  # only as much as the target says is measured to pay off
        total_s += max(op["flops"] / peak, op["bytes"] / bandwidth) + overhead_us(device, quant) * 1e-6
        total_s += op.get("blocks", 0) * block_cost_ns(device, op) * 1e-9
    p50 = (total_s + _by_kernel(device.run_overhead_us, quant, 0.0) * 1e-6) * 1e3
    how = device.calibration or "assumed, uncalibrated factors"
    kernels = {op["kernel"] for op in ops if "kernel" in op} | {_precision(quant)[1]}
    unfitted = sorted(k for k in kernels if device.calibration and k not in device.fitted_kernels)
    if unfitted:  # efficiency() falls back to another class's factor: say the estimate rests on that assumption
        how += f"; kernel class {', '.join(unfitted)} not calibrated: assumed"
    return Latency(p50_ms=p50, p99_ms=p50 * device.tail_factor, spread=0.0, source="estimated",
                   detail=f"roofline over {len(ops)} ops ({how}); compute efficiency {device.compute_efficiency}, "
                          f"bandwidth efficiency {device.bandwidth_efficiency}, {overhead_us(device, quant):.1f} us/op, "
                          f"block cost {device.block_cost_ns} ns, "
                          f"p99 = p50 x {device.tail_factor}")


def overhead_us(device: DeviceSpec, quant: QuantParams) -> float:
    """Per-kernel launch/dispatch cost; may depend on the recipe, because the graph does: fp32 and int8
    artifacts run onnxruntime's fused transformer graph, weight-only ones the unfused graph with more small ops
    (whose shape/mask sub-graph is also a fixed cost per run: `run_overhead_us`)."""
    return _by_kernel(device.op_overhead_us, quant, 10.0)


def block_cost_ns(device: DeviceSpec, op: dict) -> float:
    """The op's kernel class's cost per weight block (0 where no calibration fitted one)."""
    value = device.block_cost_ns
    return value.get(op.get("kernel"), 0.0) if isinstance(value, dict) else value


def _by_kernel(value, quant: QuantParams, default: float) -> float:
    if not isinstance(value, dict):
        return value
    return value.get(_precision(quant)[1], value.get("fp32", default))


def efficiency(device: DeviceSpec, op: dict) -> float:
    """A fitted factor for the op's kernel class, else for its precision, else the fp32 one."""
    ce = device.compute_efficiency
    if not isinstance(ce, dict):
        return ce
    for key in (op.get("kernel"), op["precision"], "fp32"):
        if key in ce:
            return ce[key]
    return 0.5

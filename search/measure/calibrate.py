"""Fit the roofline's free factors to measured latencies (compute efficiency, per-op and per-run
overhead and cost per weight block per kernel class; bandwidth efficiency) by minimising the squared log error.

Plain gradient descent in torch on log-parameters: a handful of unknowns per kernel class, a few dozen points;
no optimisation library is needed for that and torch is already here.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..target import KERNEL_CLASSES, DeviceSpec
from .roofline import _precision, operators

KERNELS = ("fp32", "int8") + KERNEL_CLASSES  # every class with a fitted efficiency and overhead


def _features(cases: list[dict], device: DeviceSpec):
    """Flattened over every op of every case: FLOPs / peak, bytes / bandwidth, kernel class, case index, weight
    blocks; per case: op count and the recipe's kernel class (which selects its per-op overhead)."""
    f, b, p, case, n_ops, graph, blocks = [], [], [], [], [], [], []
    for i, c in enumerate(cases):
        ops = operators(c["shape"], c["quant"], c["batch"], c["seq"], False)
        n_ops.append(len(ops))
        graph.append(KERNELS.index(_precision(c["quant"])[1]))
        for op in ops:
            f.append(op["flops"] / (device.peak_tops.get(op["precision"], device.peak_tops["fp32"]) * 1e12))
            b.append(op["bytes"] / (device.memory_bandwidth_gbps * 1e9))
            p.append(KERNELS.index(op.get("kernel", op["precision"])))
            case.append(i)
            blocks.append(op.get("blocks", 0))
    as_t = lambda x, dt=torch.float64: torch.tensor(x, dtype=dt)  # noqa: E731
    return (as_t(f), as_t(b), as_t(p, torch.long), as_t(case, torch.long), as_t(n_ops), as_t(graph, torch.long),
            as_t(blocks))


def _classes_with_block_sizes(cases: list[dict]) -> set[str]:
    """Kernel classes whose linear ops come with two FLOPs-per-block ratios or more (two block sizes, or
    per-channel blocks over different widths): only there is a block's cost not a multiple of the FLOPs'."""
    ratios: dict[str, set] = {}
    for c in cases:
        for op in operators(c["shape"], c["quant"], c["batch"], c["seq"], False):
            if op.get("blocks"):
                ratios.setdefault(op["kernel"], set()).add(round(op["flops"] / op["blocks"]))
    return {k for k, r in ratios.items() if len(r) > 1}


def predict_ms(feats, eff: torch.Tensor, bw: torch.Tensor, overhead_s: torch.Tensor,
               run_s: torch.Tensor, block_s: torch.Tensor) -> torch.Tensor:
    f, b, p, case, n_ops, graph, blocks = feats
    per_op = torch.maximum(f / eff[p], b / bw) + blocks * block_s[p]
    total = torch.zeros(len(n_ops), dtype=torch.float64).index_add(0, case, per_op)
    return (total + n_ops * overhead_s[graph] + run_s[graph]) * 1e3


def fit(cases: list[dict], measured_ms: list[float], device: DeviceSpec, steps: int = 2000) -> DeviceSpec:
    """cases: {"shape", "quant", "batch", "seq"}; returns the device with fitted factors."""
    feats = _features(cases, device)
    # log-parameters: a fitted efficiency above 1 says the spec's peak is too low, and is kept visible
    raw_eff = torch.full((len(KERNELS),), math.log(0.5), dtype=torch.float64, requires_grad=True)
    raw_bw = torch.tensor(math.log(0.5), dtype=torch.float64, requires_grad=True)
    log_over = torch.full((len(KERNELS),), math.log(10.0), dtype=torch.float64, requires_grad=True)  # us
    log_run = torch.full((len(KERNELS),), math.log(50.0), dtype=torch.float64, requires_grad=True)  # us
    log_block = torch.full((len(KERNELS),), math.log(1.0), dtype=torch.float64, requires_grad=True)  # ns
    # at one workload an op's FLOPs and its blocks both scale with its weights: a class's cost per block is told
    # apart from its efficiency only where its cases have two block sizes or more; elsewhere it is not fitted (0)
    blocked = _classes_with_block_sizes(cases)
    has_cost = torch.tensor([k in blocked for k in KERNELS], dtype=torch.float64)
    target = torch.log(torch.tensor(measured_ms, dtype=torch.float64))
    opt = torch.optim.Adam([raw_eff, raw_bw, log_over, log_run, log_block], lr=0.05)
    for _ in range(steps):
        pred = predict_ms(feats, torch.exp(raw_eff), torch.exp(raw_bw), torch.exp(log_over) * 1e-6,
                          torch.exp(log_run) * 1e-6, torch.exp(log_block) * has_cost * 1e-9)
        loss = ((torch.log(pred) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # only the kernel classes some case exercised were fitted; the others kept their starting values, which are
    # not a fit: they are left out, so an estimate for them falls back to an assumed factor and says so
    seen = {k for i, k in enumerate(KERNELS) if bool((feats[2] == i).any()) or bool((feats[5] == i).any())}
    keep = lambda values: {k: v for k, v in zip(KERNELS, values) if k in seen}  # noqa: E731
    with torch.no_grad():
        return replace(device, compute_efficiency=keep(torch.exp(raw_eff).tolist()),
                       bandwidth_efficiency=torch.exp(raw_bw).item(),
                       op_overhead_us=keep(torch.exp(log_over).tolist()),
                       run_overhead_us=keep(torch.exp(log_run).tolist()),
                       block_cost_ns={k: v for k, v in zip(KERNELS, torch.exp(log_block).tolist()) if k in blocked},
                       fitted_kernels=tuple(k for k in KERNELS if k in seen))

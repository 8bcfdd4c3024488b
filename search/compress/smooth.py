"""SmoothQuant (Xiao et al., 2023): move activation outliers into the weights before static int8, with
s_j = max|X_j|^alpha / max|W_:,j|^(1-alpha); the Linear computes (x / s) @ (W * s)^T, the same function.

The paper folds 1/s into the preceding LayerNorm; in a post-LN encoder that LayerNorm's output also feeds the
residual, so folding would change the model. Here 1/s stays an explicit per-channel Mul in front of the
Linear (one element-wise op), and static quantization then sees the smoothed input. Hand-written because
onnxruntime's SmoothQuant option needs neural-compressor (not installed, and it folds into LayerNorm).
"""
from __future__ import annotations

import torch

from .. import families
from .calibration import each_linear_input


class Smoothed(torch.nn.Module):
    """x -> linear(x * inv_scale); the Linear's columns were multiplied by the scale."""

    def __init__(self, linear: torch.nn.Linear, inv_scale: torch.Tensor):
        super().__init__()
        self.linear = linear
        self.register_buffer("inv_scale", inv_scale)

    def forward(self, x):
        return self.linear(x * self.inv_scale)


def input_absmax(model, calibration: dict) -> dict:
    out = {}

    def update(lin, x):
        out[lin] = torch.maximum(out.get(lin, torch.zeros(lin.in_features)), x.abs().amax(0))

    each_linear_input(model, families.of(model).linears(model), calibration, update)
    return out


@torch.no_grad()
def smooth(model, alpha: float, calibration: dict) -> int:
    """Replace every encoder Linear by its smoothed equivalent, in place; returns how many."""
    absmax = input_absmax(model, calibration)
    parents = {child: (parent, name) for parent in model.modules() for name, child in parent.named_children()}
    for lin, act in absmax.items():
        w_max = lin.weight.abs().amax(0).clamp(min=1e-5)
        scale = (act.clamp(min=1e-5) ** alpha / w_max ** (1 - alpha)).clamp(min=1e-5)
        lin.weight.mul_(scale[None, :])
        parent, name = parents[lin]
        setattr(parent, name, Smoothed(lin, 1.0 / scale))
    return len(absmax)

"""Quantization-aware recovery: KD steps in which every block Linear computes with its round-to-nearest
weights (straight-through gradients to the latent fp32 weights), so the network adapts to the exact
grid the weight-only artifact will use: the latent weights are later rounded by the same `grid.rtn`.
"""
from __future__ import annotations

import torch
from torch.nn.utils import parametrize

from .. import families
from ..candidate import QuantParams, Scheme
from ..errors import CandidateError
from ..train import KD, train
from . import weight_only
from .grid import block_size_for, rtn


class FakeQuant(torch.nn.Module):
    """w -> rtn(w) in the forward pass, identity in the backward pass; pruned zeros stay zero."""

    def __init__(self, bits: int, group_size, in_features: int, mask: torch.Tensor | None):
        super().__init__()
        self.bits, self.block = bits, block_size_for(in_features, group_size)
        self.register_buffer("mask", mask)  # a buffer: it follows the model to the training device

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            w = w * self.mask
        return w + (rtn(w, self.bits, self.block).dequantize() - w).detach()


def attach(model, params: QuantParams, calibration: dict) -> list[torch.nn.Module]:
    """Fake-quantize the block Linears at the bits the artifact will give each layer (and the
    embeddings at 4 bits when the artifact stores them so)."""
    modules = []
    for layer, (bits, group) in zip(families.of(model).blocks(model),
                                    weight_only.layer_plan(model, params, calibration)):
        for lin in weight_only.layer_linears(layer):
            w = lin.weight.detach()
            sparse = (w == 0).float().mean().item() > 0.01  # unstructured / 2:4 masks survive training
            parametrize.register_parametrization(
                lin, "weight", FakeQuant(bits, group, lin.in_features, (w != 0).float() if sparse else None))
            modules.append(lin)
    if params.bits <= weight_only.EMBEDDING_BITS:  # the artifact's embeddings are 4-bit too
        for emb in weight_only.embeddings(model):
            parametrize.register_parametrization(
                emb, "weight", FakeQuant(weight_only.EMBEDDING_BITS, params.group_size, emb.weight.shape[1], None))
            modules.append(emb)
    return modules


def detach(modules: list[torch.nn.Module]) -> None:
    """Back to plain modules holding the trained latent weights (masked), which `rtn` rounds at export."""
    for mod in modules:
        mask = mod.parametrizations.weight[0].mask
        parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)
        if mask is not None:
            with torch.no_grad():
                mod.weight.mul_(mask.to(mod.weight.device))


def apply(model, params: QuantParams, *, train_split, kd: KD, calibration: dict, seed: int = 0, log=None):
    """`params.qat_steps` of KD with fake-quantized weights; a no-op at 0 steps."""
    if params.qat_steps <= 0:
        return model
    if params.scheme is not Scheme.WEIGHT_ONLY or params.method != "rtn":
        raise CandidateError(f"quantization-aware recovery needs weight-only round-to-nearest, got {params}")
    modules = attach(model, params, calibration)
    try:
        train(model, train_split, steps=params.qat_steps, kd=kd, lr=2e-5, seed=seed + 100, desc="  qat", log=log)
    finally:
        detach(modules)
    return model

"""Prune: unstructured magnitude, structured heads + FFN neurons (matrices shrink), or 2:4 semi-structured.

Masks go through torch.nn.utils.prune so recovery training keeps pruned weights at zero; they are
made permanent (prune.remove) before export. Structured pruning physically slices the matrices.
"""
from __future__ import annotations

import torch
from torch.nn.utils import prune as torch_prune

from .. import arch
from ..candidate import PruneParams
from ..errors import CandidateError
from ..train import KD, train


def mask_2_4(weight: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest |w| of every 4 consecutive inputs (the layout sparse tensor cores use)."""
    out_f, in_f = weight.shape
    if in_f % 4:
        raise CandidateError(f"2:4 sparsity needs in_features divisible by 4, got {in_f}")
    groups = weight.abs().reshape(out_f, in_f // 4, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(2, dim=-1).indices, True)
    return keep.reshape(out_f, in_f).to(weight.dtype)


def structured(model, ratio: float, importance: arch.Importance) -> None:
    """Remove the `ratio` least important heads and FFN neurons of every layer (at least one kept)."""
    for layer, head_scores, ffn_scores in zip(arch.layers_of(model), importance.heads, importance.ffn):
        n_heads = max(1, round(len(head_scores) * (1 - ratio)))
        n_ffn = max(1, round(len(ffn_scores) * (1 - ratio)))
        arch.slice_heads(layer, arch.top_k(head_scores, n_heads).tolist())
        arch.slice_ffn(layer, arch.top_k(ffn_scores, n_ffn))
    arch.sync_config(model)


def weight_sparsity(model) -> float:
    """Measured fraction of exact zeros over the encoder Linears' weights."""
    weights = [m.weight for m in arch.encoder_linears(model)]
    return float(sum((w == 0).sum().item() for w in weights) / sum(w.numel() for w in weights))


def apply(model, params: PruneParams, *, train_split, kd: KD, calibration: tuple, seed: int = 0):
    """Prune in place and recover with `recovery_steps` of distillation; returns the model."""
    if params.type == "none":
        return model
    if not 0 < params.ratio < 1:
        raise CandidateError(f"prune.ratio must be in (0, 1) for {params.type}, got {params.ratio}")
    linears = arch.encoder_linears(model)
    if params.type == "structured":
        structured(model, params.ratio, arch.measure_importance(model, *calibration))
    elif params.type == "unstructured":
        for lin in linears:  # layer-wise: every matrix loses the same fraction
            torch_prune.l1_unstructured(lin, "weight", amount=params.ratio)
    elif params.type == "2:4":
        for lin in linears:
            torch_prune.custom_from_mask(lin, "weight", mask_2_4(lin.weight.detach()))
    else:
        raise CandidateError(f"unknown prune.type {params.type!r}")
    train(model, train_split, steps=params.recovery_steps, kd=kd, lr=5e-5, seed=seed + 1, desc="  recover")
    if params.type in ("unstructured", "2:4"):
        for lin in linears:
            torch_prune.remove(lin, "weight")
    return model

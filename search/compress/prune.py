"""Prune: unstructured (layer-wise or global; magnitude or Wanda), structured heads + FFN neurons (matrices
shrink; ranked by norm or gradient importance), or 2:4 semi-structured (magnitude or Wanda); one-shot or
iterative (a cubic schedule of prune -> recover rounds, Zhu & Gupta 2017).

Masks go through torch.nn.utils.prune so recovery training keeps pruned weights at zero; they are
made permanent (prune.remove) before export. Structured pruning physically slices the matrices.
"""
from __future__ import annotations

import torch
from torch.nn.utils import prune as torch_prune

from .. import families
from ..candidate import PRUNE_CRITERIA, PRUNE_IMPORTANCE, PRUNE_SCOPES, PRUNE_TYPES, PruneParams
from ..errors import CandidateError
from ..families.base import Importance, ModelShape
from ..train import KD, train
from .calibration import each_linear_input


def schedule(ratio: float, iterations: int) -> list[float]:
    """Cumulative ratio after each round: r * (1 - (1 - t/k)^3), fast early while the model has slack."""
    return [ratio * (1 - (1 - t / iterations) ** 3) for t in range(1, iterations + 1)]


def input_norms(model, calibration: dict) -> dict:
    """Per block Linear: the L2 norm of each input feature over the calibration tokens (Wanda's ||X_j||)."""
    sums = {}

    def add(lin, x):
        sums[lin] = sums.get(lin, 0) + (x.float() ** 2).sum(0)

    each_linear_input(model, families.of(model).linears(model), calibration, add)
    return {lin: v.sqrt() for lin, v in sums.items()}


def scores(lin, criterion: str, norms: dict | None) -> torch.Tensor:
    """|W| (magnitude) or |W| x ||X_j|| (Wanda, Sun et al. 2023): a small weight on a loud input matters."""
    w = lin.weight.detach().abs()
    return w * norms[lin][None, :] if criterion == "wanda" else w


def keep_top(score: torch.Tensor, fraction_removed: float, per_row: bool) -> torch.Tensor:
    """Mask keeping the highest scores, removing exactly round(fraction x n) (per row when per_row)."""
    rows = score if per_row else score.reshape(1, -1)
    n_remove = round(rows.shape[1] * fraction_removed)
    mask = torch.ones_like(rows)
    if n_remove:
        mask.scatter_(1, rows.topk(n_remove, dim=1, largest=False).indices, 0.0)
    return mask.reshape(score.shape)


def unstructured_masks(linears, ratio: float, criterion: str, scope: str, norms) -> list[torch.Tensor]:
    """Layer scope: every matrix loses `ratio` (Wanda: every output row); global: one threshold over all."""
    all_scores = [scores(lin, criterion, norms) for lin in linears]
    if scope == "global":
        flat = keep_top(torch.cat([s.reshape(-1) for s in all_scores]), ratio, per_row=False)
        return [m.reshape(s.shape) for m, s in zip(flat.split([s.numel() for s in all_scores]), all_scores)]
    return [keep_top(s, ratio, per_row=criterion == "wanda") for s in all_scores]


def mask_2_4(score: torch.Tensor) -> torch.Tensor:
    """Keep the 2 highest-scoring of every 4 consecutive inputs (the layout sparse tensor cores use);
    the score is |w| (magnitude) or |w| x ||x|| (Wanda)."""
    out_f, in_f = score.shape
    if in_f % 4:
        raise CandidateError(f"2:4 sparsity needs in_features divisible by 4, got {in_f}")
    groups = score.abs().reshape(out_f, in_f // 4, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(2, dim=-1).indices, True)
    return keep.reshape(out_f, in_f).to(score.dtype)


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(scores, k).indices.sort().values


def structured(model, ratio: float, importance: Importance, original: ModelShape | None = None) -> None:
    """Keep the most important (1 - ratio) of each layer's heads and FFN neurons (at least one); the
    ratio counts from `original` (the shape before the first of several rounds) when given."""
    family = families.of(model)
    shape = original or family.shape_of(model)
    for i, (layer, head_scores, ffn_scores) in enumerate(zip(family.blocks(model), importance.heads, importance.ffn)):
        n_heads = max(1, round(shape.heads[i] * (1 - ratio)))
        n_ffn = max(1, round(shape.ffn[i] * (1 - ratio)))
        family.slice_heads(layer, family.top_heads(layer, head_scores, min(n_heads, len(head_scores))).tolist())
        family.slice_ffn(layer, top_k(ffn_scores, min(n_ffn, len(ffn_scores))))
    family.sync_config(model)


def weight_sparsity(model) -> float:
    """Measured fraction of exact zeros over the block Linears' weights."""
    weights = [m.weight for m in families.of(model).linears(model)]
    return float(sum((w == 0).sum().item() for w in weights) / sum(w.numel() for w in weights))


def apply(model, params: PruneParams, *, train_split, kd: KD, calibration: dict, seed: int = 0, labels=None,
          log=None):
    """Prune in place in `params.iterations` rounds, each followed by its share of `recovery_steps` of
    distillation; returns the model. `labels` (of the calibration examples) feed gradient importance."""
    if params.type == "none":
        return model
    if not 0 < params.ratio < 1:
        raise CandidateError(f"prune.ratio must be in (0, 1) for {params.type}, got {params.ratio}")
    if params.iterations < 1:
        raise CandidateError(f"prune.iterations must be >= 1, got {params.iterations}")
    for name, value, allowed in (("type", params.type, PRUNE_TYPES), ("scope", params.scope, PRUNE_SCOPES),
                                 ("criterion", params.criterion, PRUNE_CRITERIA),
                                 ("importance", params.importance, PRUNE_IMPORTANCE)):
        if value not in allowed:
            raise CandidateError(f"unknown prune.{name} {value!r}; one of {', '.join(allowed)}")
    family = families.of(model)
    linears = family.linears(model)
    original = family.shape_of(model)
    # 2:4 is a fixed pattern: one round, however many were asked
    rounds = [0.5] if params.type == "2:4" else schedule(params.ratio, params.iterations)
    total, k = params.recovery_steps, len(rounds)
    for r, ratio in enumerate(rounds):
        steps = total * (r + 1) // k - total * r // k  # shares summing exactly to recovery_steps
        if params.type == "structured":
            importance = (family.gradient_importance(model, calibration, labels, kd.task_type.loss)
                          if params.importance == "gradient" else family.measure_importance(model, calibration))
            structured(model, ratio, importance, original)
        else:
            norms = input_norms(model, calibration) if params.criterion == "wanda" else None
            masks = ([mask_2_4(scores(lin, params.criterion, norms)) for lin in linears] if params.type == "2:4"
                     else unstructured_masks(linears, ratio, params.criterion, params.scope, norms))
            for lin, mask in zip(linears, masks):  # a second mask multiplies into the first
                torch_prune.custom_from_mask(lin, "weight", mask)
        train(model, train_split, steps=steps, kd=kd, lr=5e-5, seed=seed + 1 + r, desc=f"  recover {r + 1}",
              log=log)
    if params.type in ("unstructured", "2:4"):
        for lin in linears:
            torch_prune.remove(lin, "weight")
    return model

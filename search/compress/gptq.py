"""GPTQ (Frantar et al., 2022): round one input column at a time and push each rounding error onto the
columns not yet rounded, weighted by the inverse Hessian of the layer's calibration inputs.

Hand-written (about 40 lines, after the authors' reference gptq.py): the maintained implementations
(auto-gptq, gptqmodel, optimum) target decoder LLMs on GPU and are not installable here.
"""
from __future__ import annotations

import torch

from .grid import Codes, block_scales, round_to_codes

LAZY_COLUMNS = 128  # columns updated lazily as one matmul (the reference's "blocksize")


def hessian_update(h: torch.Tensor | None, n_seen: int, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Running H = 2/n * sum(x x^T) over the rows of x ([tokens, K])."""
    x = x.detach().float()
    k = x.shape[-1]
    if h is None:
        h = torch.zeros(k, k)
    n_new = n_seen + x.shape[0]
    h *= n_seen / n_new
    x = x * (2.0 / n_new) ** 0.5
    h += x.t() @ x
    return h, n_new


def gptq(weight: torch.Tensor, hessian: torch.Tensor, bits: int, block: int, damp: float = 0.01) -> Codes:
    """Codes for `weight` [N, K] with one scale per `block` inputs (a block >= K: one per output channel)."""
    w = weight.detach().float().clone()
    n, k = w.shape
    h = hessian.clone().double()
    dead = torch.diag(h) == 0  # inputs never active in calibration: their weights cannot matter there
    h[dead, dead] = 1
    w[:, dead] = 0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(k, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()

    n_blocks = -(-k // block)
    codes = torch.zeros(n, n_blocks * block, dtype=torch.uint8)  # padding past K is never read
    scales = torch.zeros(n, n_blocks)
    # lazy batches hold whole groups, so a group's scale is taken from its error-updated weights
    lazy = max(LAZY_COLUMNS, block) if block < k else LAZY_COLUMNS
    scale = None
    for i1 in range(0, k, lazy):
        i2 = min(i1 + lazy, k)
        w1, hinv1 = w[:, i1:i2].clone(), hinv[i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        for i in range(i2 - i1):
            col = i1 + i
            if col % block == 0:
                group = torch.zeros(n, block)
                width = min(block, k - col)
                group[:, :width] = w1[:, i:i + width] if i + width <= i2 - i1 else w[:, col:col + width]
                scale = block_scales(group[:, None, :], bits)[:, 0]
                scales[:, col // block] = scale
            q = round_to_codes(w1[:, i], scale, bits)
            codes[:, col] = q
            err = (w1[:, i] - (q.float() - (1 << (bits - 1))) * scale) / hinv1[i, i]
            w1[:, i:] -= err[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return Codes(codes.view(n, n_blocks, block), scales, bits, k)

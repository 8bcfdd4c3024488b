"""Calibration statistics: what GPTQ, Wanda and SmoothQuant read from each Linear's inputs."""
from __future__ import annotations

import torch

from .. import families


@torch.no_grad()
def each_linear_input(model, linears, calibration: dict, fn) -> None:
    """One forward over the calibration batch (named features) calling fn(linear, inputs over real tokens
    [tokens, in]) for each of `linears`."""
    family = families.of(model)
    keep = family.token_mask(calibration)
    hooks = [lin.register_forward_pre_hook(lambda m, inp: fn(m, inp[0][keep])) for lin in linears]
    try:
        family.forward(model, calibration)
    finally:
        for h in hooks:
            h.remove()

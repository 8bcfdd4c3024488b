"""Importance matrices: per input column of each matrix, the mean squared activation it sees on calibration
text. This is llama.cpp's `imatrix` quantity (llama-imatrix sums x^2 per column and divides by the count);
it is collected here in torch on the fp32 model that is about to be quantized, because llama-imatrix is a
command-line tool of llama.cpp's source tree, not part of the installable library."""
from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def collect(model, family, linears: list[tuple[str, torch.nn.Linear]], token_ids: np.ndarray,
            window: int = 512) -> dict[str, np.ndarray]:
    """`linears` as (name, module); `token_ids` are cut into windows of `window` tokens (the last partial one
    dropped). Returns name -> float32 [in_features]."""
    sums = {name: torch.zeros(lin.in_features, dtype=torch.float64) for name, lin in linears}
    count = [0]
    hooks = []
    for name, lin in linears:
        def hook(module, inputs, name=name):
            x = inputs[0].reshape(-1, inputs[0].shape[-1]).to(torch.float64)
            sums[name] += (x * x).sum(0)
        hooks.append(lin.register_forward_pre_hook(hook))
    try:
        n = len(token_ids) // window
        if n == 0:
            raise ValueError(f"{len(token_ids)} calibration tokens; an importance matrix needs at least {window}")
        for row in np.asarray(token_ids[: n * window]).reshape(n, window):
            ids = torch.as_tensor(row, dtype=torch.long).unsqueeze(0)
            family.forward(model, family.sequence_features(ids))
            count[0] += window
    finally:
        for h in hooks:
            h.remove()
    return {name: (s / count[0]).to(torch.float32).numpy() for name, s in sums.items()}

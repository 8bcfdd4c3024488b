"""Weight-only quantization of the encoder Linears in torch: round-to-nearest or GPTQ, uniform bits or
per-layer bits chosen by measured sensitivity. The model's weights become the dequantized values (what
the artifact computes with), and the codes are returned keyed by module name for the runtime backend.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import families
from ..candidate import QUANT_METHODS, QuantParams
from ..errors import CandidateError
from . import gptq as gptq_mod
from .calibration import each_linear_input
from .grid import Codes, block_size_for, rtn

HIGH_BITS = 8  # what the most sensitive layers keep under mixed precision
EMBEDDING_BITS = 4  # at <= 4 bits the artifact stores the embeddings at 4 bits (onnxruntime: 4-bit Gather only)


def embeddings(model) -> list[torch.nn.Embedding]:
    return families.of(model).embeddings(model)


@torch.no_grad()
def quantize_embeddings(model, group_size) -> None:
    """Round the embedding tables as onnxruntime's GatherBlockQuantized export will (same sign-of-absmax
    rule, blocks along the hidden axis), so GPTQ calibrates on the inputs the artifact really sees:
    measured, GPTQ calibrated on fp32 embeddings lost to round-to-nearest once the embeddings were 4-bit."""
    for emb in embeddings(model):
        emb.weight.data = rtn(emb.weight, EMBEDDING_BITS, block_size_for(emb.weight.shape[1], group_size)).dequantize()


def layer_linears(layer) -> list[torch.nn.Linear]:
    return [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]


@torch.no_grad()
def _outputs(model, calibration: dict) -> torch.Tensor:
    return families.of(model).forward(model, calibration).outputs.float()


@torch.no_grad()
def layer_sensitivity(model, bits: int, group_size, calibration) -> list[float]:
    """KL(full precision || one layer rounded to `bits` in blocks of `group_size`) on the calibration batch, per
    encoder layer."""
    ref = F.log_softmax(_outputs(model, calibration), -1)
    out = []
    for block in families.of(model).blocks(model):
        linears = layer_linears(block)
        saved = [lin.weight.data.clone() for lin in linears]
        for lin in linears:
            lin.weight.data = rtn(lin.weight, bits, block_size_for(lin.in_features, group_size)).dequantize()
        out.append(float(F.kl_div(F.log_softmax(_outputs(model, calibration), -1), ref, log_target=True,
                                  reduction="batchmean")))
        for lin, w in zip(linears, saved):
            lin.weight.data = w
    return out


def bits_per_layer(model, params: QuantParams, calibration) -> list[int]:
    """`params.bits` everywhere, except the round(fraction x layers) most sensitive layers at 8 bits."""
    n = len(families.of(model).blocks(model))
    n_high = round(params.high_precision_fraction * n)
    if n_high == 0:
        return [params.bits] * n
    scores = torch.tensor(layer_sensitivity(model, params.bits, params.group_size, calibration))
    high = set(scores.argsort(descending=True)[:n_high].tolist())
    return [HIGH_BITS if i in high else params.bits for i in range(n)]


def layer_plan(model, params: QuantParams, calibration) -> list[tuple[int, int | str]]:
    """(bits, group size) per encoder layer: the solver's choice where it made one, else `bits_per_layer` at the
    recipe's group size."""
    if params.layer_options is not None:
        n = len(families.of(model).blocks(model))
        if len(params.layer_options) != n:
            raise CandidateError(f"{len(params.layer_options)} per-layer precisions for {n} encoder layers")
        return [tuple(o) for o in params.layer_options]
    if params.precision == "solver":
        raise CandidateError("quant.precision=solver: the per-layer choice is made before quantizing "
                             "(allocation.allocate, in the classifier pipeline's run_candidate)")
    return [(b, params.group_size) for b in bits_per_layer(model, params, calibration)]


def _layer_hessians(model, layer, calibration) -> dict:
    """Inputs of this layer's Linears (over real tokens) with everything before it already quantized."""
    acc = {}

    def add(lin, x):
        h, n = acc.get(lin, (None, 0))
        acc[lin] = gptq_mod.hessian_update(h, n, x)

    each_linear_input(model, layer_linears(layer), calibration, add)
    return {lin: h for lin, (h, _) in acc.items()}


@torch.no_grad()
def quantize_linears(model, params: QuantParams, calibration) -> dict[str, Codes]:
    """Quantize every block Linear in place (layer by layer, so GPTQ sees the already-quantized inputs
    it will get at run time); returns {module name: codes}. The task head stays fp32."""
    if params.group_size is None:
        raise CandidateError("weight-only quantization needs quant.group_size")
    if params.method not in QUANT_METHODS:
        raise CandidateError(f"unknown quant.method {params.method!r}")
    if params.bits <= EMBEDDING_BITS:
        quantize_embeddings(model, params.group_size)
    out = {}
    names = {m: n for n, m in model.named_modules()}
    for layer, (bits, group) in zip(families.of(model).blocks(model), layer_plan(model, params, calibration)):
        hessians = _layer_hessians(model, layer, calibration) if params.method == "gptq" else {}
        for lin in layer_linears(layer):
            block = block_size_for(lin.in_features, group)
            codes = (gptq_mod.gptq(lin.weight, hessians[lin], bits, block) if params.method == "gptq"
                     else rtn(lin.weight, bits, block))
            lin.weight.data = codes.dequantize()
            out[names[lin]] = codes
    return out

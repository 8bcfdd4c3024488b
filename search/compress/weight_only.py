"""Weight-only quantization of the encoder Linears in torch: round-to-nearest or GPTQ, uniform bits or
per-layer bits chosen by measured sensitivity. The model's weights become the dequantized values (what
the MatMulNBits artifact computes with), and the codes are returned keyed for `nbits.rewrite`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import arch
from ..candidate import QUANT_METHODS, QuantParams
from ..errors import CandidateError
from . import gptq as gptq_mod
from .nbits import Codes, block_size_for, key_of_linear, rtn

HIGH_BITS = 8  # what the most sensitive layers keep under mixed precision
EMBEDDING_BITS = 4  # at <= 4 bits the artifact stores the embeddings at 4 bits (GatherBlockQuantized)


def embeddings(model) -> list[torch.nn.Embedding]:
    """The three embedding tables (a trimmed vocabulary's table sits inside its id-remapping wrapper)."""
    emb = model.bert.embeddings
    return [getattr(m, "embedding", m) for m in (emb.word_embeddings, emb.position_embeddings,
                                                 emb.token_type_embeddings)]


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
def _logits(model, calibration) -> torch.Tensor:
    ids, mask = calibration
    return model(input_ids=ids, attention_mask=mask).logits.float()


@torch.no_grad()
def layer_sensitivity(model, bits: int, group_size, calibration) -> list[float]:
    """KL(full precision || one layer rounded to `bits`) on the calibration batch, per encoder layer."""
    ref = F.log_softmax(_logits(model, calibration), -1)
    out = []
    for layer in arch.layers_of(model):
        saved = [lin.weight.data.clone() for lin in layer_linears(layer)]
        for lin in layer_linears(layer):
            lin.weight.data = rtn(lin.weight, bits, block_size_for(lin.in_features, group_size)).dequantize()
        out.append(float(F.kl_div(F.log_softmax(_logits(model, calibration), -1), ref, log_target=True,
                                  reduction="batchmean")))
        for lin, w in zip(layer_linears(layer), saved):
            lin.weight.data = w
    return out


def bits_per_layer(model, params: QuantParams, calibration) -> list[int]:
    """`params.bits` everywhere, except the round(fraction x layers) most sensitive layers at 8 bits."""
    n = len(arch.layers_of(model))
    n_high = round(params.high_precision_fraction * n)
    if n_high == 0:
        return [params.bits] * n
    scores = torch.tensor(layer_sensitivity(model, params.bits, params.group_size, calibration))
    high = set(scores.argsort(descending=True)[:n_high].tolist())
    return [HIGH_BITS if i in high else params.bits for i in range(n)]


def _layer_hessians(model, layer, calibration) -> dict:
    """Inputs of this layer's Linears (over real tokens) with everything before it already quantized."""
    acc = {}

    def add(lin, x):
        h, n = acc.get(lin, (None, 0))
        acc[lin] = gptq_mod.hessian_update(h, n, x)

    arch.each_linear_input(model, layer_linears(layer), calibration, add)
    return {lin: h for lin, (h, _) in acc.items()}


@torch.no_grad()
def quantize_linears(model, params: QuantParams, calibration) -> dict[str, Codes]:
    """Quantize every encoder Linear in place (layer by layer, so GPTQ sees the already-quantized inputs
    it will get at run time); returns {weight key: codes}. The pooler/classifier stay fp32."""
    if params.group_size is None:
        raise CandidateError("weight-only quantization needs quant.group_size")
    if params.method not in QUANT_METHODS:
        raise CandidateError(f"unknown quant.method {params.method!r}")
    if params.bits <= EMBEDDING_BITS:
        quantize_embeddings(model, params.group_size)
    out = {}
    for layer, bits in zip(arch.layers_of(model), bits_per_layer(model, params, calibration)):
        hessians = _layer_hessians(model, layer, calibration) if params.method == "gptq" else {}
        for lin in layer_linears(layer):
            block = block_size_for(lin.in_features, params.group_size)
            codes = (gptq_mod.gptq(lin.weight, hessians[lin], bits, block) if params.method == "gptq"
                     else rtn(lin.weight, bits, block))
            lin.weight.data = codes.dequantize()
            out[key_of_linear(lin.weight)] = codes
    return out

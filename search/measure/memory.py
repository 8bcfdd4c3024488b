"""Memory: exact weight bytes of the artifact, plus an analytic peak-activation estimate."""
from __future__ import annotations

from pathlib import Path

import onnx
from onnx import numpy_helper

from ..arch import ModelShape
from ..candidate import QuantParams
from ..compress.nbits import block_size_for
from ..compress.weight_only import HIGH_BITS

MB = 1e6


PACKED_BITS = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}


def tensor_bytes(t: onnx.TensorProto) -> int:
    """Stored bytes; 4-bit tensors are packed two per byte (numpy would unpack them to one per byte)."""
    if t.raw_data:
        return len(t.raw_data)
    bits = PACKED_BITS.get(t.data_type)
    if bits:
        n = 1
        for d in t.dims:
            n *= d
        return -(-n * bits // 8)
    return numpy_helper.to_array(t).nbytes


def weight_bytes(path: Path) -> int:
    """Bytes of every initializer and Constant tensor in the ONNX file (measured, exact)."""
    model = onnx.load(str(path))
    total = sum(tensor_bytes(t) for t in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            total += sum(tensor_bytes(a.t) for a in node.attribute if a.type == onnx.AttributeProto.TENSOR)
    return int(total)


def activation_bytes(shape: ModelShape, batch_size: int, sequence_length: int) -> int:
    """Estimated peak fp32 activations of one encoder layer (the runtime frees layer by layer):
    residual in/out, Q/K/V, attention scores and probabilities, FFN intermediate."""
    b, s = batch_size, sequence_length
    per_layer = [2 * b * s * shape.hidden + 3 * b * s * h * shape.head_dim + 2 * b * h * s * s + b * s * f
                 for h, f in zip(shape.heads, shape.ffn)]
    return 4 * max(per_layer + [2 * b * s * shape.hidden])


def predicted_weight_bytes(shape: ModelShape, quant: QuantParams) -> int:
    """Weight bytes the artifact will have, from the shape alone (for rejecting before training)."""
    linears = shape.linear_shapes()
    encoder, head = linears[:-2], linears[-2:]  # pooler and classifier are Gemm nodes
    vectors = sum(o for _, o in linears) + 2 * shape.hidden * (2 * shape.layers + 1)  # biases, LN gamma/beta
    embeddings = (shape.vocab + shape.max_positions + shape.type_vocab) * shape.hidden
    vectors += 2 * shape.id_map_size  # the trimmed vocabulary's int64 id table, as 2 float-sized words
    head_params = sum(i * o for i, o in head)
    if quant.bits == 32:
        return 4 * (vectors + embeddings + head_params + sum(i * o for i, o in encoder))
    if quant.activations == "dynamic_int8":  # every matrix incl. the Gemm head to int8, per-tensor scale
        return 4 * vectors + embeddings + head_params + sum(i * o for i, o in encoder)
    if quant.activations == "static_int8":  # encoder MatMuls int8 with a scale + zero point per output channel
        smoothing = 4 * sum(i for i, _ in encoder) if quant.smooth_alpha else 0  # SmoothQuant's 1/s vectors
        return (4 * (vectors + embeddings + head_params) + sum(i * o + 5 * o for i, o in encoder) + smoothing)

    def blocked(i, o, bits, group=quant.group_size):  # MatMulNBits: K padded to whole blocks, fp32 scale per block
        g = block_size_for(i, group)
        return o * -(-i // g) * (g * bits // 8 + 4)

    per_layer = len(encoder) // max(shape.layers, 1)
    n_high = round(quant.high_precision_fraction * shape.layers)  # the most sensitive layers, at 8 bits
    matmuls = sum(blocked(i, o, HIGH_BITS if j // per_layer < n_high else quant.bits)
                  for j, (i, o) in enumerate(encoder))  # which layers are high does not change the total
    if quant.bits <= 4:  # 4-bit GatherBlockQuantized over the hidden axis for the three embeddings
        emb = sum(blocked(shape.hidden, rows, 4) for rows in (shape.vocab, shape.max_positions, shape.type_vocab))
    else:
        emb = 4 * embeddings
    return 4 * (vectors + head_params) + matmuls + emb  # weight-only leaves the Gemm head in fp32

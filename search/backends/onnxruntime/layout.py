"""onnxruntime's MatMulNBits layout: torch-computed codes (compress/grid.py) packed and written into the graph.

Hand-written because onnxruntime's MatMulNBitsQuantizer only takes float weights and rounds them itself
(its GPTQ path needs neural-compressor and fails on our graphs): GPTQ and per-layer mixed precision need
the codes chosen in torch to be the codes shipped. Codes come keyed by module name; the exporter names
MatMul weights after nothing we control, so a module's initializer is found by its exact bytes.
"""
from __future__ import annotations

import hashlib

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from ...compress.grid import Codes
from ...errors import CandidateError

MAX_2BIT_BLOCK = 256  # onnxruntime 1.32 refuses larger 2-bit MatMulNBits blocks at session start


def check_block(bits: int, block: int) -> None:
    if bits == 2 and block > MAX_2BIT_BLOCK:
        raise CandidateError(f"2-bit weights need blocks <= {MAX_2BIT_BLOCK} in onnxruntime 1.32 (got {block}: "
                             f"per-channel over a wide input); use a group size <= {MAX_2BIT_BLOCK}")


def pack(codes: torch.Tensor, bits: int) -> np.ndarray:
    """[N, blocks, block] codes -> [N, blocks, block*bits/8] uint8, element j in bits [bits*j, bits*(j+1))."""
    per = 8 // bits
    c = codes.numpy().astype(np.uint8)
    c = c.reshape(*c.shape[:-1], c.shape[-1] // per, per)
    out = np.zeros(c.shape[:-1], dtype=np.uint8)
    for j in range(per):
        out |= c[..., j] << (bits * j)
    return out


def unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    per = 8 // bits
    mask = (1 << bits) - 1
    parts = np.stack([(packed >> (bits * j)) & mask for j in range(per)], axis=-1)
    return parts.reshape(*packed.shape[:-1], packed.shape[-1] * per)


def weight_key(matmul_b: np.ndarray) -> str:
    """Identify a MatMul initializer ([K, N] = the torch weight transposed) by its exact bytes."""
    return hashlib.sha256(np.ascontiguousarray(matmul_b, dtype=np.float32).tobytes()).hexdigest()


def key_of_linear(weight: torch.Tensor) -> str:
    return weight_key(weight.detach().float().t().contiguous().numpy())


def by_weight_key(model: torch.nn.Module, codes: dict[str, Codes]) -> dict[str, Codes]:
    """{module name: codes} -> {exact bytes of the exported initializer: codes}; the module's weight must
    already hold the dequantized values (what the exported graph then carries)."""
    modules = dict(model.named_modules())
    return {key_of_linear(modules[name].weight): c for name, c in codes.items()}


def rewrite(model: onnx.ModelProto, by_key: dict[str, Codes], accuracy_level: int = 4) -> int:
    """Replace every MatMul whose weight matches a key with a MatMulNBits carrying those codes.
    Returns how many were replaced."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    replaced, new_nodes, dropped = 0, [], set()
    for node in graph.node:
        init = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        codes = by_key.get(weight_key(numpy_helper.to_array(init))) if init is not None and len(init.dims) == 2 else None
        if codes is None:
            new_nodes.append(node)
            continue
        k, n = init.dims
        base = init.name.replace("/", "_").replace(":", "_")
        b_name, s_name = f"{base}_Q{codes.bits}", f"{base}_scales"
        graph.initializer.extend([numpy_helper.from_array(pack(codes.codes, codes.bits), b_name),
                                  numpy_helper.from_array(codes.scales.numpy().astype(np.float32), s_name)])
        new_nodes.append(helper.make_node(
            "MatMulNBits", [node.input[0], b_name, s_name], list(node.output), name=f"{node.name}_Q{codes.bits}",
            domain="com.microsoft", K=k, N=n, bits=codes.bits, block_size=codes.block,
            accuracy_level=accuracy_level))
        dropped.add(init.name)
        replaced += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    still_used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name not in dropped or t.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if replaced and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return replaced

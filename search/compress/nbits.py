"""Weight-only n-bit codes in onnxruntime's MatMulNBits layout, computed in torch and written into the graph.

Hand-written because onnxruntime's MatMulNBitsQuantizer only takes float weights and rounds them itself
(its GPTQ path needs neural-compressor and fails on our graphs, BACKENDS/session-1 note): GPTQ and
per-layer mixed precision need the codes chosen here to be the codes shipped. The layout (symmetric,
implicit zero point 2^(bits-1), codes packed low bits first) and the rounding rule are ORT's own;
tests check byte equality against ORT's quantizer.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from ..errors import CandidateError

CHANNEL = "channel"  # group_size value: one block spans the whole input dimension


MAX_2BIT_BLOCK = 256  # onnxruntime 1.32 refuses larger 2-bit MatMulNBits blocks at session start


def block_size_for(in_features: int, group_size: int | str) -> int:
    """MatMulNBits blocks are powers of two >= 16; per-channel = one block of K rounded up (zero padded)."""
    if group_size == CHANNEL:
        return max(16, 1 << (in_features - 1).bit_length())
    return int(group_size)


def check_block(bits: int, block: int) -> None:
    if bits == 2 and block > MAX_2BIT_BLOCK:
        raise CandidateError(f"2-bit weights need blocks <= {MAX_2BIT_BLOCK} in onnxruntime 1.32 (got {block}: "
                             f"per-channel over a wide input); use a group size <= {MAX_2BIT_BLOCK}")


@dataclass
class Codes:
    """One matrix: codes [N, blocks, block] in [0, 2^bits), scales [N, blocks]; value = (code - zp) * scale."""

    codes: torch.Tensor
    scales: torch.Tensor
    bits: int
    in_features: int

    @property
    def block(self) -> int:
        return self.codes.shape[-1]

    def dequantize(self) -> torch.Tensor:
        """The [N, K] float weight this artifact computes with."""
        zp = 1 << (self.bits - 1)
        w = (self.codes.float() - zp) * self.scales[..., None]
        return w.reshape(w.shape[0], -1)[:, : self.in_features]


def pad_blocks(weight: torch.Tensor, block: int) -> torch.Tensor:
    """[N, K] -> [N, blocks, block], zero padded along K (what MatMulNBits does for a ragged last block)."""
    n, k = weight.shape
    blocks = -(-k // block)
    out = torch.zeros(n, blocks * block, dtype=torch.float32)
    out[:, :k] = weight
    return out.view(n, blocks, block)


def block_scales(blocks: torch.Tensor, bits: int) -> torch.Tensor:
    """ORT's symmetric rule: the largest-magnitude value (with its sign) maps to code 0, scale = v / -zp."""
    idx = blocks.abs().argmax(dim=-1, keepdim=True)
    return (blocks.gather(-1, idx).squeeze(-1) / -float(1 << (bits - 1))).float()


def round_to_codes(values: torch.Tensor, scales: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes for values given their scales (broadcast), with ORT's reciprocal-multiply rounding."""
    zp = 1 << (bits - 1)
    inv = torch.where(scales != 0, 1.0 / scales, torch.zeros_like(scales))
    return torch.clamp(torch.round(values * inv) + zp, 0, (1 << bits) - 1).to(torch.uint8)


def rtn(weight: torch.Tensor, bits: int, block: int) -> Codes:
    """Round-to-nearest, one scale per block."""
    check_block(bits, block)
    blocks = pad_blocks(weight.detach().float(), block)
    scales = block_scales(blocks, bits)
    codes = round_to_codes(blocks, scales[..., None], bits)
    codes.view(codes.shape[0], -1)[:, weight.shape[1]:] = 0  # padding past K: never read; 0 as ORT writes it
    return Codes(codes, scales, bits, weight.shape[1])


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

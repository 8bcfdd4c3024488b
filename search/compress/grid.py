"""Block-wise symmetric integer grids, computed in torch: the codes a runtime backend then writes in its
own layout (the onnxruntime backend: MatMulNBits). Codes are chosen here (round-to-nearest here, GPTQ in
gptq.py, fake-quantized in qat.py) so that what was trained or calibrated is exactly what ships.

The rounding rule (symmetric, implicit zero point 2^(bits-1), the largest-magnitude value with its sign
mapped to code 0, reciprocal-multiply rounding) is onnxruntime's; tests check byte equality against its
own quantizer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

CHANNEL = "channel"  # group_size value: one block spans the whole input dimension


def block_size_for(in_features: int, group_size: int | str) -> int:
    """Blocks are powers of two >= 16; per-channel = one block of K rounded up to one (zero padded)."""
    if group_size == CHANNEL:
        return max(16, 1 << (in_features - 1).bit_length())
    return int(group_size)


SCALE_BYTES = 4  # one fp32 scale per block (MatMulNBits; the packed zero point is a fraction of a byte)


def blocked_bytes(in_features: int, out_features: int, bits: int, group_size: int | str) -> tuple[int, int]:
    """(blocks, stored bytes) of one block-quantized matrix: K padded to whole blocks, each block's codes at `bits`
    and its scale. What the backend writes and what the roofline reads per inference."""
    block = block_size_for(in_features, group_size)
    blocks = out_features * -(-in_features // block)
    return blocks, blocks * (block * bits // 8 + SCALE_BYTES)


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
    blocks = pad_blocks(weight.detach().float(), block)
    scales = block_scales(blocks, bits)
    codes = round_to_codes(blocks, scales[..., None], bits)
    codes.view(codes.shape[0], -1)[:, weight.shape[1]:] = 0  # padding past K: never read; 0 as ORT writes it
    return Codes(codes, scales, bits, weight.shape[1])



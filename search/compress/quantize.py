"""Quantize: turn the (pruned) student into the onnxruntime artifact that is measured and shipped.

onnxruntime is the only CPU runtime measured here to give real int8 speed-ups (BACKENDS.md):
- fp32: torch.onnx export + ORT's BERT graph fusion;
- int8 weights + dynamic int8 activations: quantize_dynamic on the fused graph;
- 8/4-bit weight-only, group-wise: MatMulNBits (block size = group size); at 4 bits the word
  embedding is quantized too (GatherBlockQuantized), or it would stay the largest fp32 tensor.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch

from .. import arch
from ..candidate import QuantParams
from ..errors import CandidateError

OPSET = 17


class _quiet:
    """onnxruntime's quantizers log every tensor at INFO on the root logger; keep the terminal readable."""

    def __enter__(self):
        logging.disable(logging.WARNING)

    def __exit__(self, *exc):
        logging.disable(logging.NOTSET)


def export_onnx(model, path: Path) -> Path:
    """Legacy exporter (dynamo=False): the graph onnxruntime's BERT optimizer knows how to fuse."""
    model.eval()
    ids = torch.ones(1, 8, dtype=torch.long)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ids, torch.ones_like(ids)), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}})
    return path


def _fuse(src: Path, dst: Path, shape: arch.ModelShape) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    uniform = len(set(shape.heads)) == 1 and shape.heads[0] * shape.head_dim == shape.hidden
    # 0/0 lets the optimizer detect sizes; fusion is skipped where pruned heads break the pattern
    heads, hidden = (shape.heads[0], shape.hidden) if uniform else (0, 0)
    optimized = optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden)
    optimized.save_model_to_file(str(dst))
    return dst


def quantize_artifact(model, params: QuantParams, workdir: Path) -> Path:
    """Export + quantize into workdir; returns the path of the artifact (model.onnx)."""
    workdir.mkdir(parents=True, exist_ok=True)
    shape = arch.shape_of(model)
    raw = export_onnx(model, workdir / "exported_fp32.onnx")
    out = workdir / "model.onnx"
    try:
        with _quiet():
            _build(raw, out, params, shape, workdir)
    except CandidateError:
        raise
    except Exception as exc:  # onnxruntime's quantizers raise bare Exceptions for unsupported graphs
        raise CandidateError(f"onnxruntime could not quantize ({params}): {exc}") from exc
    raw.unlink()
    return out


def _build(raw: Path, out: Path, params: QuantParams, shape: arch.ModelShape, workdir: Path) -> None:
    if params.bits == 32:
        _fuse(raw, out, shape)
    elif params.bits == 8 and params.activations == "dynamic_int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        fused = _fuse(raw, workdir / "fused_fp32.onnx", shape)
        # DefaultTensorType: without it the fused graph fails ("Unable to find data type for weight")
        quantize_dynamic(str(fused), str(out), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        fused.unlink()
    elif params.bits in (4, 8) and params.activations == "none":
        _weight_only(raw, out, params.bits, params.group_size)
    else:
        raise CandidateError(f"no onnxruntime recipe for {params}")


def _weight_only(src: Path, dst: Path, bits: int, group_size: int | None) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    if group_size is None:
        raise CandidateError("weight-only quantization needs quant.group_size")
    # GatherBlockQuantized (quantized embedding) exists for 4 bits only in onnxruntime 1.32
    ops = ("MatMul", "Gather") if bits == 4 else ("MatMul",)
    config = DefaultWeightOnlyQuantConfig(block_size=group_size, is_symmetric=True, accuracy_level=4, bits=bits,
                                          op_types_to_quantize=ops, quant_axes=(("MatMul", 0), ("Gather", 1)))
    model = onnx.load(str(src))
    # a trimmed vocabulary's id table is a 1-D int64 Gather: a lookup, not a weight to quantize
    tables = {t.name for t in model.graph.initializer if len(t.dims) == 1}
    lookups = [n.name for n in model.graph.node if n.op_type == "Gather" and n.input[0] in tables]
    quantizer = MatMulNBitsQuantizer(model, nodes_to_exclude=lookups, algo_config=config)
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)

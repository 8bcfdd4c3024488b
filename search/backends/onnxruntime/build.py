"""Build the onnxruntime artifact (model.onnx) that is measured and shipped, from the (pruned) student.

onnxruntime is the only CPU runtime measured here to give real int8 speed-ups (BACKENDS.md):
- fp32: torch.onnx export + ORT's transformer graph fusion (the family names the fusion's model type);
- int8 weights + dynamic int8 activations: quantize_dynamic on the fused graph;
- int8 weights + static int8 activations (ranges calibrated on training examples, optionally smoothed
  first: compress/smooth.py): quantize_static (QDQ, per-channel) on the unfused graph - on the fused one
  ORT's type inference fails and it silently leaves activations in fp32 (measured, session 2);
- 8/4/2-bit weight-only, group-wise or per channel: MatMulNBits, with codes chosen in torch
  (compress/weight_only.py: round-to-nearest or GPTQ, optionally 8 bits for the most sensitive layers)
  and written in MatMulNBits' layout (layout.py); at 4 and 2 bits the embeddings are quantized too, to
  4 bits (GatherBlockQuantized, 4-bit only in ORT 1.32), or they would stay the largest fp32 tensors.
"""
from __future__ import annotations

import copy
import logging
import shutil
import warnings
from pathlib import Path

import onnx
import torch

from ... import families
from ...candidate import QuantParams, Scheme
from ...compress import smooth, weight_only
from ...compress.grid import block_size_for
from ...errors import CandidateError
from ...families.base import ModelShape
from . import layout

OPSET = 17
ARTIFACT = "model.onnx"


class _quiet:
    """onnxruntime's quantizers log every tensor at INFO on the root logger; keep the terminal readable."""

    def __enter__(self):
        logging.disable(logging.WARNING)

    def __exit__(self, *exc):
        logging.disable(logging.NOTSET)


def export_onnx(model, path: Path, shape: ModelShape | None = None) -> Path:
    """Legacy exporter (dynamo=False): the graph onnxruntime's transformer optimizer knows how to fuse.
    `shape`: the model's, when a wrapper (SmoothQuant's) hides it from the family."""
    family = families.of(model)
    spec = family.export_spec(shape or family.shape_of(model))
    model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(spec.example[name] for name in spec.inputs), str(path), dynamo=False,
                          opset_version=OPSET, input_names=list(spec.inputs), output_names=list(spec.outputs),
                          dynamic_axes=spec.dynamic_axes)
    return path


def _fuse(src: Path, dst: Path, shape: ModelShape) -> Path:
    """onnxruntime's transformer fusion where the family names a fusion model type; else the graph as is
    (onnxruntime still applies its generic optimisations when the session starts)."""
    from onnxruntime.transformers.optimizer import optimize_model

    hints = families.get(shape.family).export_spec(shape).optimizer_hints
    if not hints.get("model_type"):
        shutil.copyfile(src, dst)
        return dst
    optimized = optimize_model(str(src), **hints)
    optimized.save_model_to_file(str(dst))
    return dst


def build(model, params: QuantParams, workdir: Path, calibration: dict | None = None) -> Path:
    """Export + quantize into workdir; returns the artifact's path. `calibration` (a feature batch of
    training examples) feeds GPTQ, the sensitivity ranking and static int8's ranges."""
    workdir.mkdir(parents=True, exist_ok=True)
    shape = families.of(model).shape_of(model)
    weight_codes = None
    if params.scheme is Scheme.INT8_STATIC:
        if calibration is None:
            raise CandidateError(f"{params} needs calibration data")
        if params.smooth_alpha:
            model = copy.deepcopy(model)
            smooth.smooth(model, params.smooth_alpha, calibration)
    elif params.scheme is Scheme.WEIGHT_ONLY:
        if calibration is None and (params.method == "gptq" or params.high_precision_fraction):
            raise CandidateError(f"{params} needs calibration data")
        model = copy.deepcopy(model)  # the caller keeps its fp32 student
        family = families.of(model)
        if params.layer_options is not None and len(params.layer_options) != len(family.blocks(model)):
            raise CandidateError(f"{len(params.layer_options)} per-layer precisions for "
                                 f"{len(family.blocks(model))} encoder layers")
        for i, layer in enumerate(family.blocks(model)):
            layer_params = params.for_layer(i)
            for lin in family.block_linears(layer):
                layout.check_block(layer_params.bits, block_size_for(lin.in_features, layer_params.group_size))
        codes = weight_only.quantize_linears(model, params, calibration)
        weight_codes = layout.by_weight_key(model, codes)
    raw = export_onnx(model, workdir / "exported_fp32.onnx", shape)
    out = workdir / ARTIFACT
    try:
        with _quiet():
            _build(raw, out, params, shape, workdir, weight_codes, calibration)
    except (CandidateError, OSError):  # a full disk is the machine's failure, not the recipe's
        raise
    except Exception as exc:  # onnxruntime's quantizers raise bare Exceptions for unsupported graphs
        raise CandidateError(f"onnxruntime could not quantize ({params}): {exc}") from exc
    raw.unlink()
    return out


def _build(raw: Path, out: Path, params: QuantParams, shape: ModelShape, workdir: Path,
           weight_codes: dict | None, calibration: dict | None) -> None:
    if params.scheme is Scheme.FP32:
        _fuse(raw, out, shape)
    elif params.scheme is Scheme.INT8_DYNAMIC:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        fused = _fuse(raw, workdir / "fused_fp32.onnx", shape)
        # DefaultTensorType: without it the fused graph fails ("Unable to find data type for weight")
        quantize_dynamic(str(fused), str(out), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        fused.unlink()
    elif params.scheme is Scheme.INT8_STATIC:
        _static_int8(raw, out, calibration, families.get(shape.family).export_spec(shape).quantize_ops)
    elif weight_codes is not None:
        _weight_only(raw, out, weight_codes, embeddings_4bit=params.bits <= weight_only.EMBEDDING_BITS,
                     group_size=block_size_for(shape.hidden, params.group_size))
    else:
        raise CandidateError(f"no onnxruntime recipe for {params}")


def _static_int8(src: Path, dst: Path, calibration: dict, op_types: tuple = ("MatMul",), batch_size: int = 16) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    n = len(next(iter(calibration.values())))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{name: t[i:i + batch_size].numpy() for name, t in calibration.items()}
                                 for i in range(0, n, batch_size)])

        def get_next(self):
            return next(self.batches, None)

    # the family's op types: a transformer's MatMuls only (the Gemm pooler's int32 bias needs an input scale ORT
    # cannot infer through Gather); a CNN's convolutions and head too
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(op_types),
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def _weight_only(src: Path, dst: Path, weight_codes: dict, embeddings_4bit: bool, group_size: int) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    model = onnx.load(str(src))
    n_linears = len(weight_codes)
    replaced = layout.rewrite(model, weight_codes)
    if replaced != n_linears:
        raise CandidateError(f"found {replaced} of {n_linears} quantized Linears in the exported graph")
    if embeddings_4bit:
        config = DefaultWeightOnlyQuantConfig(block_size=group_size, is_symmetric=True, accuracy_level=4, bits=4,
                                              op_types_to_quantize=("Gather",), quant_axes=(("Gather", 1),))
        # a trimmed vocabulary's id table is a 1-D int64 Gather: a lookup, not a weight to quantize
        tables = {t.name for t in model.graph.initializer if len(t.dims) == 1}
        lookups = [n.name for n in model.graph.node if n.op_type == "Gather" and n.input[0] in tables]
        quantizer = MatMulNBitsQuantizer(model, nodes_to_exclude=lookups, algo_config=config)
        with warnings.catch_warnings():  # all-zero blocks (e.g. a padding row): ORT divides 0/0, then masks it
            warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
            quantizer.process()
        model = quantizer.model.model
    onnx.save(model, str(dst))

"""Quantize a GGUF with llama.cpp's own quantizer (`llama_model_quantize` through llama-cpp-python), with a
GGML type per tensor class and an importance matrix: the stock presets and the search's own mixes are made
by the same code that `llama-quantize` runs, so a comparison between them measures the choice of types only.

A tensor whose rows the chosen type cannot hold (k-quants need rows of a multiple of 256; SmolLM2's 576 is not)
is stored by llama.cpp in its fallback type; `tensor_types` reads back what was really written."""
from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import CandidateError
from ...run_dir import _tag

# the types a recipe may name (llama.cpp's CPU backend runs all of them); IQ types need an importance matrix
TYPES = ("F16", "Q8_0", "Q6_K", "Q5_K", "Q5_0", "Q5_1", "Q4_K", "Q4_0", "Q4_1", "IQ4_NL", "IQ4_XS", "Q3_K",
         "Q2_K")
NEEDS_IMATRIX = ("IQ4_XS",)  # ggml_quantize_requires_imatrix is only for IQ1/IQ2; these are better with one

# llama.cpp's stock presets (llama_ftype values, include/llama.h): what users pick by hand today
PRESETS = {"Q8_0": 7, "Q6_K": 18, "Q5_K_M": 17, "Q5_K_S": 16, "Q5_0": 8, "Q4_K_M": 15, "Q4_K_S": 14, "Q4_0": 2,
           "Q4_1": 3, "IQ4_NL": 25, "Q3_K_M": 12, "Q3_K_L": 13, "Q2_K": 10}

# tensor classes a recipe types separately, as regexes over llama.cpp tensor names
CLASSES = {
    "embedding": r"token_embd\.weight",
    "output": r"output\.weight",  # untied models only; a tied model's output is the embedding
    "attn_qk": r"blk\.\d+\.attn_[qk]\.weight",
    "attn_v": r"blk\.\d+\.attn_v\.weight",
    "attn_output": r"blk\.\d+\.attn_output\.weight",
    "ffn_up_gate": r"blk\.\d+\.ffn_(up|gate)\.weight",
    "ffn_down": r"blk\.\d+\.ffn_down\.weight",
}


def ggml_type(name: str) -> int:
    from gguf import GGMLQuantizationType

    try:
        return int(GGMLQuantizationType[name])
    except KeyError:
        raise CandidateError(f"unknown GGML type {name!r}; known: {', '.join(TYPES)}") from None


GGML_LOG_LEVEL_ERROR = 4  # ggml's enum: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5
_log_callback = None  # kept referenced: llama.cpp calls it for as long as the process lives


def quiet_logs() -> None:
    """Pass on llama.cpp's errors only. llama-cpp-python 0.3.36's own callback maps ggml's levels by an older
    table (WARN read as ERROR), so every per-tensor override note of a quantization reached stderr."""
    global _log_callback
    if _log_callback is not None:
        return
    import sys

    import llama_cpp

    @llama_cpp.llama_log_callback
    def callback(level, text, _user_data):
        if level == GGML_LOG_LEVEL_ERROR:
            sys.stderr.write(text.decode("utf-8", errors="replace"))

    _log_callback = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def class_of(tensor_name: str) -> str | None:
    for cls, pattern in CLASSES.items():
        if re.fullmatch(pattern, tensor_name):
            return cls
    return None


@dataclass(frozen=True)
class Mix:
    """A GGUF quantization recipe: one llama.cpp preset as the base, types per tensor class on top."""

    base: str = "Q8_0"  # a PRESETS key: the type of every tensor no class names (and llama.cpp's own mix rules)
    types: dict = field(default_factory=dict)  # class -> GGML type name
    imatrix: bool = False  # quantize with an importance matrix from the calibration text

    def label(self) -> str:
        parts = [self.base] + [f"{c}={t}" for c, t in sorted(self.types.items())]
        return " ".join(parts) + (" +imatrix" if self.imatrix else "")


def quantize(src: Path, dst: Path, mix: Mix, imatrix: dict[str, np.ndarray] | None = None, threads: int = 2) -> Path:
    """Write `dst` from the F32/F16 GGUF `src` (atomically: a failed quantization leaves nothing)."""
    import llama_cpp

    if mix.base not in PRESETS:
        raise CandidateError(f"unknown llama.cpp preset {mix.base!r}; known: {', '.join(PRESETS)}")
    if mix.imatrix and not imatrix:
        raise CandidateError("the recipe asks for an importance matrix and none was computed")
    quiet_logs()  # llama.cpp logs every tensor; fallbacks are read back from the file instead
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = PRESETS[mix.base]
    keep = []  # ctypes buffers must outlive the call
    if mix.types:
        overrides = (llama_cpp.llama_model_tensor_override * (len(mix.types) + 1))()
        for i, (cls, type_name) in enumerate(sorted(mix.types.items())):
            if cls not in CLASSES:
                raise CandidateError(f"unknown tensor class {cls!r}; known: {', '.join(CLASSES)}")
            pattern = CLASSES[cls].encode()
            keep.append(pattern)
            overrides[i].pattern, overrides[i].type = pattern, ggml_type(type_name)
        overrides[len(mix.types)].pattern = None  # the list ends at a null pattern
        params.tt_overrides = overrides
    if mix.imatrix:
        entries = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, values) in enumerate(sorted(imatrix.items())):
            arr = np.ascontiguousarray(values, dtype=np.float32)
            keep.append(arr)
            entries[i].name = name.encode()
            entries[i].data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = arr.size
        entries[len(imatrix)].name = None
        params.imatrix = entries
    tmp = dst.with_name(f".{dst.name}.{_tag()}.tmp")  # per writer: workers may write the same file
    status = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if status != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise CandidateError(f"llama.cpp could not quantize to {mix.label()} (status {status})")
    tmp.replace(dst)
    return dst


def tensor_types(path: Path) -> dict[str, str]:
    """What a GGUF really stores: tensor name -> GGML type name."""
    from gguf import GGUFReader

    return {t.name: t.tensor_type.name for t in GGUFReader(path).tensors}


def weight_bytes(path: Path) -> int:
    """Bytes of every tensor's data in a GGUF (measured; the file adds only metadata and the tokenizer)."""
    from gguf import GGUFReader

    return int(sum(int(t.n_bytes) for t in GGUFReader(path).tensors))


def bits_per_weight(path: Path) -> float:
    from gguf import GGUFReader

    tensors = GGUFReader(path).tensors
    return 8.0 * sum(int(t.n_bytes) for t in tensors) / sum(int(t.n_elements) for t in tensors)

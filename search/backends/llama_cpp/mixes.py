"""Choosing a GGML type per tensor class by measurement and an exact solver, instead of a preset's fixed rules.

1. Sensitivity: each class alone at each type it can hold (every other class at the reference type), with an
   importance matrix; its cost is the mean-KLD increase over the all-reference model, measured in llama.cpp.
2. Solver: mean KLD is treated as additive over classes (a first-order assumption, checked by measuring the
   chosen mixes), bytes are exact (elements x the type's block size); every combination is enumerated (a few
   tens of thousands for seven classes) and the size/KLD Pareto front is kept.

Written here because llama.cpp chooses types by fixed rules (llama_tensor_get_type) and no library solves this
over measured sensitivities; the enumeration is exact, so no solver package is needed."""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from .quantize import CLASSES, Mix, quantize

REFERENCE = "Q8_0"
# the types tried per class: the 32-element block types fit every row; k-quants and IQ4_XS need rows that are a
# multiple of 256 (checked per class from the shapes, so a model whose rows allow them gets them)
CANDIDATE_TYPES = ("Q8_0", "Q6_K", "Q5_K", "Q5_1", "Q5_0", "Q4_K", "IQ4_NL", "IQ4_XS", "Q4_0", "Q4_1", "Q3_K",
                   "Q2_K")


def block_size(type_name: str) -> tuple[int, int]:
    """(elements per block, bytes per block) from gguf's table."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]


# what llama.cpp stores when a row length is not a multiple of the asked type's block (llama-quant.cpp,
# llama_tensor_get_type's fallback switch): the tested pricing follows it
FALLBACK = {"Q2_K": "IQ4_NL", "Q3_K": "IQ4_NL", "IQ4_XS": "IQ4_NL", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def stored_type(type_name: str, row_len: int) -> str:
    elems, _ = block_size(type_name)
    if row_len % elems == 0:
        return type_name
    if type_name not in FALLBACK:
        raise ValueError(f"{type_name} cannot hold rows of {row_len} and llama.cpp has no fallback for it")
    return stored_type(FALLBACK[type_name], row_len)


# types llama.cpp's CPU backend repacks at load into an interleaved copy for its SIMD kernels; with the file
# memory-mapped (llama.cpp's default) the mapped pages stay resident beside the copy, so their bytes count twice in
# peak memory. Measured here (x86-64, llama-cpp-python 0.3.36, bench llm): peak RSS - file - KV cache is 26-28 MB
# for Q8_0/Q5_0/Q5_1/Q6_K/IQ4_XS/Q3_K files and grows by the bytes of their Q4_0, IQ4_NL and Q4_K tensors
# (Q4_0 preset: 87.5 MB file, 217 MB peak; a Q5_0/IQ4_XS mix of 87.2 MB: 161 MB)
REPACKED_TYPES = ("Q4_0", "IQ4_NL", "Q4_K")


def bytes_for(type_name: str, rows: int, row_len: int) -> int:
    elems, size = block_size(stored_type(type_name, row_len))
    return rows * (row_len // elems) * size


@dataclass(frozen=True)
class ClassShape:
    """A tensor class of one model: its matrices as (rows, row length) in llama.cpp's sense (row = one output)."""

    name: str
    matrices: tuple  # ((rows, row_len), ...)

    def fits(self, type_name: str) -> bool:
        elems, _ = block_size(type_name)
        return all(row_len % elems == 0 for _, row_len in self.matrices)

    def bytes(self, type_name: str) -> int:
        return sum(bytes_for(type_name, r, k) for r, k in self.matrices)

    def resident_bytes(self, type_name: str) -> int:
        """In llama.cpp's memory on a CPU: twice the bytes of rows it repacks (REPACKED_TYPES)."""
        return sum(bytes_for(type_name, r, k) * (2 if stored_type(type_name, k) in REPACKED_TYPES else 1)
                   for r, k in self.matrices)


def class_shapes(tensor_shapes: dict[str, tuple[int, int]]) -> list[ClassShape]:
    """From GGUF tensor name -> (rows, row length) of the 2-D weights."""
    out = []
    for cls, pattern in CLASSES.items():
        mats = tuple(s for name, s in sorted(tensor_shapes.items()) if re.fullmatch(pattern, name))
        if mats:
            out.append(ClassShape(cls, mats))
    return out


def class_shapes_of(path) -> list[ClassShape]:
    """The tensor classes of a GGUF file, from its 2-D tensors (llama.cpp's ne0 = row length, ne1 = rows)."""
    from gguf import GGUFReader

    return class_shapes({t.name: (int(t.shape[1]), int(t.shape[0])) for t in GGUFReader(path).tensors
                         if len(t.shape) == 2})


def options(shapes: list[ClassShape], excluded: tuple = ()) -> dict[str, list[str]]:
    """Per class: the candidate types its rows can hold, minus `excluded` (e.g. the teacher's own grid)."""
    return {c.name: [t for t in CANDIDATE_TYPES if c.fits(t) and t not in excluded] for c in shapes}


@dataclass(frozen=True)
class Predicted:
    types: dict  # class -> type
    bytes: int  # of the typed classes (the rest of the file is the same for every mix)
    kld: float  # reference KLD + the sum of the classes' increases


def front(shapes: list[ClassShape], opts: dict[str, list[str]], increase: dict[tuple[str, str], float],
          reference_kld: float, resident: bool = False) -> list[Predicted]:
    """The exact size/KLD Pareto front over every combination (sorted by bytes: of the file, or `resident` in
    llama.cpp's memory on a CPU)."""
    by_name = {c.name: c for c in shapes}
    names = list(opts)
    size = (lambda n, t: by_name[n].resident_bytes(t)) if resident else (lambda n, t: by_name[n].bytes(t))  # noqa: E731
    table = {n: [(t, size(n, t), increase.get((n, t), 0.0 if t == REFERENCE else None)) for t in opts[n]]
             for n in names}
    table = {n: [o for o in table[n] if o[2] is not None] for n in names}  # types never measured are left out
    points = []
    for combo in itertools.product(*(table[n] for n in names)):
        points.append(Predicted({n: o[0] for n, o in zip(names, combo)}, sum(o[1] for o in combo),
                                reference_kld + sum(max(o[2], 0.0) for o in combo)))
    points.sort(key=lambda p: (p.bytes, p.kld))
    out, best = [], float("inf")
    for p in points:
        if p.kld < best:
            out.append(p)
            best = p.kld
    return out


def best_within(points: list[Predicted], max_bytes: int) -> Predicted | None:
    fitting = [p for p in points if p.bytes <= max_bytes]
    return min(fitting, key=lambda p: p.kld) if fitting else None


def as_mix(p: Predicted, imatrix: bool = True) -> Mix:
    return Mix(REFERENCE, dict(p.types), imatrix)


@dataclass(frozen=True)
class Sensitivity:
    """Measured cost of each (class, type): the mean-KLD increase over the all-REFERENCE model."""

    reference_kld: float
    increase: dict  # (class, type) -> KLD increase
    options: dict  # class -> the types measured for it (REFERENCE among them)


def measure_sensitivity(f32, imatrix: dict, shapes: list[ClassShape], excluded: tuple, score, work, cache,
                        threads: int = 2, log=print) -> Sensitivity:
    """Each class alone at each type it can hold (the rest at REFERENCE, with the importance matrix), scored by
    `score(path) -> mean KLD`; every number is kept in `cache` (run_dir.JsonCache) as soon as it is measured."""
    opts = options(shapes, excluded)
    ref_kld = cache.get("sensitivity reference")
    if ref_kld is None:
        path = quantize(f32, work / "sensitivity-reference.gguf", Mix(REFERENCE, {}, True), imatrix, threads)
        ref_kld = cache.put("sensitivity reference", score(path))
    increase = {}
    for cls, types in opts.items():
        for t in types:
            if t == REFERENCE:
                continue
            key = f"sensitivity {cls} {t}"
            if cache.get(key) is None:
                path = quantize(f32, work / "sensitivity-probe.gguf", Mix(REFERENCE, {cls: t}, True), imatrix, threads)
                cache.put(key, score(path))
                log(f"  sensitivity {cls:12s} {t:7s} {cache.get(key) - ref_kld:+.4f} KLD")
            increase[(cls, t)] = cache.get(key) - ref_kld
    return Sensitivity(ref_kld, increase, opts)


# the llama_lm family's tensor names (families/llama_lm.py `tensors`) -> the tensor class llama.cpp stores them in
_FAMILY_TENSOR_CLASS = {"q": "attn_qk", "k": "attn_qk", "v": "attn_v", "o": "attn_output", "gate": "ffn_up_gate",
                        "up": "ffn_up_gate", "down": "ffn_down", "token_embd": "embedding", "output": "output"}


def planned_class_shapes(tensors) -> tuple[list[ClassShape], int]:
    """The classes of a planned shape (the family's `tensors(shape)`, before any training) and the bytes of
    everything else (norms, stored as F32): what the screen prices and the solver types."""
    mats: dict[str, list] = {}
    other = 0
    for t in tensors:
        cls = _FAMILY_TENSOR_CLASS.get(t.name.split(".")[-1]) if t.role != "vector" else None
        if cls is None:
            other += 4 * t.elements
        else:
            mats.setdefault(cls, []).append((t.rows, t.cols))  # llama.cpp rows: one per output, of `cols` elements
    return [ClassShape(c, tuple(m)) for c, m in mats.items()], other


def mix_bytes(shapes: list[ClassShape], types: dict, base: str = REFERENCE, resident: bool = False) -> int:
    return sum((c.resident_bytes if resident else c.bytes)(types.get(c.name, base)) for c in shapes)

"""A compression recipe: one frozen params dataclass per technique, applied in this order."""
from __future__ import annotations

from dataclasses import asdict, dataclass

PRUNE_TYPES = ("none", "unstructured", "structured", "2:4")
QUANT_BITS = (32, 8, 4, 2)
ACTIVATIONS = ("none", "dynamic_int8")
QUANT_METHODS = ("rtn", "gptq")
GROUP_SIZES = (16, 32, 64, 128, 256, "channel")  # "channel": one scale per output channel
VOCABS = ("full", "task")
HEAD_DIM = 32  # MiniLM's head width; students keep whole teacher heads so they can start from them


@dataclass(frozen=True)
class DistillParams:
    layers: int
    hidden: int
    heads: int  # heads per layer, at most hidden // HEAD_DIM
    ffn: int
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the soft-logit KD loss; 1 - alpha goes to the label loss
    epochs: int = 1
    vocab: str = "full"  # "task": keep only embedding rows of tokens in the task's training text


@dataclass(frozen=True)
class PruneParams:
    type: str = "none"
    ratio: float = 0.0  # fraction removed: weights (unstructured), heads+FFN neurons (structured); 2:4 is 0.5
    recovery_steps: int = 0


@dataclass(frozen=True)
class QuantParams:
    bits: int = 32
    group_size: int | str | None = None  # weight-only (MatMulNBits) block size, or "channel"
    activations: str = "none"  # "dynamic_int8": int8 weights and int8 activations quantized at run time
    method: str = "rtn"  # weight-only rounding: round-to-nearest, or GPTQ error compensation on calibration data
    high_precision_fraction: float = 0.0  # weight-only: this fraction of layers, most sensitive first, at 8 bits


@dataclass(frozen=True)
class Candidate:
    distill: DistillParams
    prune: PruneParams
    quant: QuantParams

    def flat(self) -> dict:
        """Dotted names, the same as the Optuna parameter names and the space YAML keys."""
        out = {}
        for section in ("distill", "prune", "quant"):
            for key, value in asdict(getattr(self, section)).items():
                out[f"{section}.{key}"] = value
        return out

    def label(self) -> str:
        d, p, q = self.distill, self.prune, self.quant
        prune = "" if p.type == "none" else f" {p.type}@{p.ratio:g}"
        vocab = " vocab=task" if d.vocab == "task" else ""
        return f"L{d.layers} h{d.hidden} a{d.heads} f{d.ffn}{vocab}{prune} {quant_label(q)}"


def quant_label(q: QuantParams) -> str:
    if q.bits == 32:
        return "fp32"
    if q.activations == "dynamic_int8":
        return "int8"
    group = "C" if q.group_size == "channel" else q.group_size
    mixed = f"+{q.high_precision_fraction:g}@8" if q.high_precision_fraction else ""
    method = "" if q.method == "rtn" else f" {q.method}"
    return f"w{q.bits}g{group}{mixed}{method}"

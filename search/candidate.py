"""A compression recipe: one frozen params dataclass per technique, applied in this order."""
from __future__ import annotations

from dataclasses import asdict, dataclass

PRUNE_TYPES = ("none", "unstructured", "structured", "2:4")
QUANT_BITS = (32, 8, 4)
ACTIVATIONS = ("none", "dynamic_int8")
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
    group_size: int | None = None  # weight-only (MatMulNBits) block size
    activations: str = "none"  # "dynamic_int8": int8 weights and int8 activations quantized at run time


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
    return "int8" if q.activations == "dynamic_int8" else f"w{q.bits}g{q.group_size}"

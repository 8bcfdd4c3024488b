"""A compression recipe: one frozen params dataclass per technique, applied in this order."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from enum import Enum

PRUNE_TYPES = ("none", "unstructured", "structured", "2:4")
PRUNE_SCOPES = ("layer", "global")
PRUNE_CRITERIA = ("magnitude", "wanda")  # unstructured and 2:4
PRUNE_IMPORTANCE = ("norm", "gradient")  # structured
QUANT_BITS = (32, 8, 4, 2)
ACTIVATIONS = ("none", "dynamic_int8", "static_int8")
QUANT_METHODS = ("rtn", "gptq")
PRECISIONS = ("uniform", "solver")  # weight-only: one bits/group for every layer, or per layer by compress/precision.py
GROUP_SIZES = (16, 32, 64, 128, 256, "channel")  # "channel": one scale per output channel
VOCABS = ("full", "task")
INITS = ("teacher", "random")


class Scheme(str, Enum):
    """How a recipe quantizes, derived once from its knobs; every consumer branches on this, not on flags."""

    FP32 = "fp32"
    INT8_DYNAMIC = "int8_dynamic"  # int8 weights, activation ranges at run time
    INT8_STATIC = "int8_static"  # int8 weights and activations, ranges calibrated (optionally smoothed)
    WEIGHT_ONLY = "weight_only"  # n-bit weights in blocks, fp activations


@dataclass(frozen=True)
class DistillParams:
    layers: int
    hidden: int
    heads: int  # heads per layer, at most hidden // the teacher's head width
    ffn: int
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the soft-logit KD loss; 1 - alpha goes to the label loss
    epochs: int = 1
    vocab: str = "full"  # "task": keep only embedding rows of tokens in the task's training text
    init: str = "teacher"  # "random": same shape, the family's fresh initialisation (the baseline)
    hidden_weight: float = 0.0  # weight of hidden-state transfer: MSE to the mapped teacher layer's kept dims
    attention_weight: float = 0.0  # weight of attention transfer: KL to the mapped teacher heads' attention


@dataclass(frozen=True)
class PruneParams:
    type: str = "none"
    ratio: float = 0.0  # fraction removed: weights (unstructured), heads+FFN neurons (structured); 2:4 is 0.5
    recovery_steps: int = 0  # KD steps in all, shared equally by the rounds
    iterations: int = 1  # 1: one-shot; k: k prune -> recover rounds on a cubic schedule (not for 2:4)
    scope: str = "layer"  # unstructured: every matrix loses `ratio`, or one global threshold
    criterion: str = "magnitude"  # unstructured / 2:4: |w|, or Wanda's |w| x ||x|| on calibration inputs
    importance: str = "norm"  # structured: activation norms, or first-order Taylor (gradient) on calibration


@dataclass(frozen=True)
class QuantParams:
    bits: int = 32
    group_size: int | str | None = None  # weight-only (MatMulNBits) block size, or "channel"
    activations: str = "none"  # 8 bits: "dynamic_int8" (activation ranges at run time) or "static_int8" (calibrated)
    method: str = "rtn"  # weight-only rounding: round-to-nearest, or GPTQ error compensation on calibration data
    high_precision_fraction: float = 0.0  # weight-only: this fraction of layers, most sensitive first, at 8 bits;
    #                                       with precision=solver, this share of the bytes up to every layer at 8
    #                                       bits, placed by the solver
    qat_steps: int = 0  # weight-only RTN: KD steps with fake-quantized weights before export
    smooth_alpha: float = 0.0  # static int8: SmoothQuant migration strength (0 = off, 0.5 = the paper's default)
    precision: str = "uniform"  # weight-only: "solver" chooses each layer's bits/group within the budget
    layer_options: tuple | None = None  # the solver's choice once made: ((bits, group), ...) per encoder layer

    def for_layer(self, layer: int) -> "QuantParams":
        """How one encoder layer's matrices are quantized once the solver has chosen (else the recipe's own)."""
        if self.layer_options is None:
            return self
        bits, group = self.layer_options[layer]
        return replace(self, bits=bits, group_size=group, layer_options=None)

    @property
    def scheme(self) -> Scheme:
        if self.bits == 32:
            return Scheme.FP32
        if self.activations == "dynamic_int8":
            return Scheme.INT8_DYNAMIC
        if self.activations == "static_int8":
            return Scheme.INT8_STATIC
        return Scheme.WEIGHT_ONLY


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
                if key != "layer_options":  # the solver's result, not a knob
                    out[f"{section}.{key}"] = value
        return out

    def label(self) -> str:
        d, p, q = self.distill, self.prune, self.quant
        prune = "" if p.type == "none" else f" {prune_label(p)}"
        vocab = " vocab=task" if d.vocab == "task" else ""
        vocab += " random-init" if d.init == "random" else ""
        vocab += f" hid{d.hidden_weight:g}" if d.hidden_weight else ""
        vocab += f" att{d.attention_weight:g}" if d.attention_weight else ""
        return f"L{d.layers} h{d.hidden} a{d.heads} f{d.ffn}{vocab}{prune} {quant_label(q)}"


def prune_label(p: PruneParams) -> str:
    extra = [x for x, default in ((p.scope, "layer"), (p.criterion, "magnitude"), (p.importance, "norm"))
             if x != default]
    rounds = f"x{p.iterations}" if p.iterations > 1 else ""
    return f"{p.type}@{p.ratio:g}{rounds}" + "".join(f" {x}" for x in extra)


def quant_label(q: QuantParams) -> str:
    if q.scheme is Scheme.FP32:
        return "fp32"
    if q.scheme is Scheme.INT8_DYNAMIC:
        return "int8"
    if q.scheme is Scheme.INT8_STATIC:
        return "int8-static" + (f" sq{q.smooth_alpha:g}" if q.smooth_alpha else "")
    group = "C" if q.group_size == "channel" else q.group_size
    mixed = f"+{q.high_precision_fraction:.2g}@8" if q.high_precision_fraction else ""
    if q.layer_options is not None:
        mixed = "[" + ",".join(f"{b}g{'C' if g == 'channel' else g}" for b, g in q.layer_options) + "]"
    elif q.precision == "solver":  # the share of bytes the solver may spend (its choice is in the trial's record)
        mixed = f" solver{q.high_precision_fraction:.2g}"
    method = "" if q.method == "rtn" else f" {q.method}"
    method += f" qat{q.qat_steps}" if q.qat_steps else ""
    return f"w{q.bits}g{group}{mixed}{method}"

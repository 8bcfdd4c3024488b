"""Space: the ranges of every knob, loaded from YAML; `suggest` is the only place trials are sampled."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .candidate import ACTIVATIONS, GROUP_SIZES, INITS, PRUNE_CRITERIA, PRUNE_IMPORTANCE, PRUNE_SCOPES, \
    PRECISIONS, PRUNE_TYPES, QUANT_BITS, QUANT_METHODS, VOCABS, Candidate, DistillParams, PruneParams, QuantParams
from .families.base import Limits
from .exploit import Exploit
from .rungs import Promotion
from .schema import Reader, load_yaml, resolve

SPACES_DIR = Path(__file__).resolve().parent.parent / "spaces"


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    step: float | None
    integer: bool


@dataclass(frozen=True)
class Choice:
    options: tuple


# knob -> (kind, allowed) ; kind "int"/"float" take a fixed number or {low, high, step}; "choice" a value or list
KNOBS: dict[str, dict[str, tuple[str, Any]]] = {
    "distill": {"layers": ("int", (1, 48)), "hidden": ("int", (1, 4096)), "heads": ("int", (1, 128)),
                "ffn": ("int", (1, 16384)), "temperature": ("float", (0.5, 20.0)), "alpha": ("float", (0.0, 1.0)),
                "epochs": ("int", (1, 50)), "vocab": ("choice", VOCABS), "init": ("choice", INITS),
                "hidden_weight": ("float", (0.0, 1000.0)), "attention_weight": ("float", (0.0, 1000.0))},
    "prune": {"type": ("choice", PRUNE_TYPES), "ratio": ("float", (0.0, 0.95)),
              "recovery_steps": ("int", (0, 100000)), "iterations": ("int", (1, 50)),
              "scope": ("choice", PRUNE_SCOPES), "criterion": ("choice", PRUNE_CRITERIA),
              "importance": ("choice", PRUNE_IMPORTANCE)},
    "quant": {"bits": ("choice", QUANT_BITS), "group_size": ("choice", GROUP_SIZES),
              "activations": ("choice", ACTIVATIONS), "method": ("choice", QUANT_METHODS),
              "high_precision_fraction": ("float", (0.0, 1.0)), "qat_steps": ("int", (0, 100000)),
              "smooth_alpha": ("float", (0.0, 1.0)), "precision": ("choice", PRECISIONS)},
}


@dataclass(frozen=True)
class Space:
    path: Path
    knobs: dict  # "section.name" -> Range | Choice | fixed value
    promote: Promotion = Promotion()  # a second rung of training for trials that could reach the floor (rungs.py)
    exploit: Exploit = Exploit()  # cheap variants of a student that put a trial on the front (exploit.py)

    def suggest(self, trial, limits: Limits) -> Candidate:
        """Define-by-run: a knob is sampled only where it acts (group size and method for weight-only bits,
        activations for 8 bits, scope/criterion for unstructured, importance for structured, ...). Heads are
        capped at what the sampled width holds for this teacher's head width (`limits`)."""
        g = lambda name: self._suggest(trial, name)  # noqa: E731
        hidden = g("distill.hidden")
        distill = DistillParams(layers=g("distill.layers"), hidden=hidden,
                                heads=limits.heads_for(g("distill.heads"), hidden), ffn=g("distill.ffn"),
                                temperature=g("distill.temperature"), alpha=g("distill.alpha"),
                                epochs=g("distill.epochs"), vocab=g("distill.vocab"), init=g("distill.init"),
                                hidden_weight=g("distill.hidden_weight"),
                                attention_weight=g("distill.attention_weight"))
        ptype = g("prune.type")
        ratio = {"none": 0.0, "2:4": 0.5}.get(ptype)
        prune = PruneParams(type="none")
        if ptype != "none":
            prune = PruneParams(
                type=ptype, ratio=g("prune.ratio") if ratio is None else ratio,
                recovery_steps=g("prune.recovery_steps"),
                iterations=g("prune.iterations") if ptype != "2:4" else 1,
                scope=g("prune.scope") if ptype == "unstructured" else "layer",
                criterion=g("prune.criterion") if ptype in ("unstructured", "2:4") else "magnitude",
                importance=g("prune.importance") if ptype == "structured" else "norm")
        bits = g("quant.bits")
        activations = g("quant.activations") if bits == 8 else "none"  # 8 bits: int8 kernels or weight-only
        quant = QuantParams(bits=bits, activations=activations,
                            smooth_alpha=g("quant.smooth_alpha") if activations == "static_int8" else 0.0)
        if bits < 32 and activations == "none":  # weight-only
            method = g("quant.method")
            precision = g("quant.precision") if bits < 8 else "uniform"  # the solver's options start at `bits`
            quant = QuantParams(bits=bits, group_size=g("quant.group_size"), method=method, precision=precision,
                                high_precision_fraction=g("quant.high_precision_fraction") if bits < 8 else 0.0,
                                qat_steps=g("quant.qat_steps") if method == "rtn" else 0)
        return Candidate(distill, prune, quant)

    def _suggest(self, trial, name: str):
        knob = self.knobs[name]
        if isinstance(knob, Range):
            if knob.integer:
                return trial.suggest_int(name, int(knob.low), int(knob.high), step=int(knob.step or 1))
            return trial.suggest_float(name, knob.low, knob.high, step=knob.step)
        if isinstance(knob, Choice):
            return trial.suggest_categorical(name, list(knob.options))
        return knob


def _read_knob(r: Reader, name: str, kind: str, allowed):
    value = r.raw(name)
    if kind == "choice":
        options = value if isinstance(value, list) else [value]
        if not options:
            raise r.error(name, "empty list; give at least one of " + ", ".join(map(str, allowed)))
        for opt in options:
            if opt not in allowed or isinstance(opt, bool):
                raise r.error(name, f"got {opt!r}; allowed: {', '.join(map(str, allowed))}")
        return Choice(tuple(options)) if isinstance(value, list) else value
    lo_allowed, hi_allowed = allowed
    integer = kind == "int"
    if isinstance(value, dict):
        rr = Reader(r.file, value, r.key(name))
        low = rr.number("low", lo=lo_allowed, hi=hi_allowed, integer=integer)
        high = rr.number("high", lo=lo_allowed, hi=hi_allowed, integer=integer)
        step = rr.number("step", default=None, lo=0, lo_open=True, integer=integer)
        rr.done()
        if low > high:
            raise rr.error("low", f"got low={low} > high={high}; swap them")
        if step is not None and abs(((high - low) / step) - round((high - low) / step)) > 1e-9:
            raise rr.error("step", f"got {step}; high - low ({high - low}) must be a multiple of it")
        return Range(low, high, step, integer)
    return Reader(r.file, {name: value}, r.prefix).number(name, lo=lo_allowed, hi=hi_allowed, integer=integer)


# knobs added later may be left out of a space file: they take the params dataclass's default, which
# means what the recipe meant before them ("off")
ADDED_LATER = {"distill": ("vocab", "init", "hidden_weight", "attention_weight"),
               "prune": ("iterations", "scope", "criterion", "importance"),
               "quant": ("method", "high_precision_fraction", "qat_steps", "smooth_alpha", "precision")}
_PARAMS = {"distill": DistillParams, "prune": PruneParams, "quant": QuantParams}
OPTIONAL = {f"{section}.{f.name}": f.default for section, names in ADDED_LATER.items()
            for f in fields(_PARAMS[section]) if f.name in names}


def load_space(name_or_path: str) -> Space:
    path = resolve(name_or_path, SPACES_DIR)
    top = Reader(path, load_yaml(path, "space"))
    if top.has("gguf"):
        raise top.error("gguf", "this is a language-model space (llama.cpp targets); for this target give a space "
                                "with distill/prune/quant sections, e.g. --space default")
    knobs = {}
    for section, spec in KNOBS.items():
        r = top.section(section)
        for name, (kind, allowed) in spec.items():
            key = f"{section}.{name}"
            knobs[key] = OPTIONAL[key] if key in OPTIONAL and not r.has(name) else _read_knob(r, name, kind, allowed)
        r.done()
    promote = Promotion()
    if top.has("promote"):  # optional: without it every trial trains once (one rung)
        r = top.section("promote")
        promote = Promotion(epochs=r.number("epochs", lo=0, hi=50), within=r.number("within", default=0.05, lo=0),
                            patience=r.number("patience", default=2, lo=1, hi=20, integer=True))
        r.done()
    exploit = Exploit()
    if top.has("exploit"):  # optional: without it every recipe comes from the sampler
        r = top.section("exploit")
        exploit = Exploit(variants=r.number("variants", lo=0, hi=20, integer=True))
        r.done()
    top.done()
    return Space(path=path, knobs=knobs, promote=promote, exploit=exploit)


def values(knob) -> list:
    """Every value a knob can take (ranges listed at their step or ends)."""
    if isinstance(knob, Choice):
        return list(knob.options)
    if isinstance(knob, Range):
        if knob.step:
            n = int(round((knob.high - knob.low) / knob.step))
            return [knob.low + i * knob.step for i in range(n + 1)]
        return [knob.low, knob.high]
    return [knob]


def check_against_teacher(space: Space, limits: Limits) -> None:
    """Students are cut from the teacher, so no knob may ask for more than the teacher has, and widths
    are whole teacher heads."""
    from .errors import ConfigError

    for hidden in values(space.knobs["distill.hidden"]):
        if int(hidden) % limits.head_dim:
            raise ConfigError(space.path, "distill.hidden",
                              f"{hidden} is not a multiple of the teacher's head width {limits.head_dim}; "
                              f"use a step of {limits.head_dim} or a multiple of it")
    for name, limit in (("distill.layers", limits.layers), ("distill.hidden", limits.hidden),
                        ("distill.ffn", limits.ffn)):
        top = max(values(space.knobs[name]))
        if top > limit:
            raise ConfigError(space.path, name, f"up to {top} asked, but the teacher has {limit}; "
                                                f"students are cut from the teacher, so keep it <= {limit}")

"""The language-model search space (task type causal_lm, runtime llama.cpp): ranges of every knob of an
LMRecipe, loaded from YAML with the same knob syntax as space.py (a fixed value, a list, or {low, high, step});
`suggest` samples one recipe per trial. Optuna parameter names are the dotted keys (cut.drop_layers,
gguf.types.ffn_down, ...)."""
from __future__ import annotations

from dataclasses import dataclass

from ...backends.llama_cpp.mixes import CANDIDATE_TYPES
from ...backends.llama_cpp.quantize import CLASSES
from .recipe import LMRecipe
from ...errors import ConfigError
from ...schema import Reader, load_yaml, resolve
from ...space import SPACES_DIR, Choice, Space, _read_knob, values

KNOBS = {
    "cut": {"drop_layers": ("int", (0, 1000)), "ffn": ("int", (1, 1 << 20)), "kv_groups": ("int", (1, 1024))},
    "recovery": {"steps": ("int", (0, 100000))},
    "gguf": {},
}
TYPE_CLASSES = tuple(c for c in CLASSES if c != "output")  # `output` exists only in untied models


@dataclass(frozen=True)
class LMSpace(Space):
    excluded_types: tuple = ()  # types the solver may not use (gguf.exclude: e.g. the teacher's own grid)

    @property
    def solver(self) -> bool:
        """GGML types chosen per class by the exact solver within a sampled bits-per-weight, not sampled."""
        return "gguf.bits_per_weight" in self.knobs

    @property
    def typed_classes(self) -> tuple:
        return tuple(c for c in TYPE_CLASSES if f"gguf.types.{c}" in self.knobs) or TYPE_CLASSES

    def suggest(self, trial, limits=None) -> LMRecipe:
        g = lambda name: self._suggest(trial, name)  # noqa: E731
        ffn, groups = g("cut.ffn"), g("cut.kv_groups")
        recipe = LMRecipe(drop_layers=g("cut.drop_layers"), ffn=None if ffn == limits.ffn else ffn,
                          kv_groups=None if groups == limits.heads // limits.head_group else groups,
                          imatrix=True if self.solver else g("gguf.imatrix"),  # the solver's sensitivities use one
                          bits_per_weight=g("gguf.bits_per_weight") if self.solver else None,
                          types=() if self.solver else tuple((c, g(f"gguf.types.{c}")) for c in sorted(TYPE_CLASSES)
                                                             if f"gguf.types.{c}" in self.knobs))
        if recipe.cuts:  # recovery only after a cut: an uncut teacher has nothing to recover
            recipe = LMRecipe(**{**recipe.__dict__, "recovery_steps": g("recovery.steps")})
        return recipe


def _read_bool_knob(r: Reader, name: str):
    value = r.raw(name)
    options = value if isinstance(value, list) else [value]
    if not options or not all(isinstance(v, bool) for v in options):
        raise r.error(name, f"got {value!r}; give true, false or [true, false]")
    return Choice(tuple(options)) if isinstance(value, list) else value


def load_lm_space(name_or_path: str) -> LMSpace:
    path = resolve(name_or_path, SPACES_DIR)
    top = Reader(path, load_yaml(path, "space"))
    if not top.has("gguf"):
        raise top.error("gguf", "missing: this is not a language-model space; a llama.cpp target needs one with "
                                "cut/recovery/gguf sections, e.g. --space llm")
    knobs = {}
    for section, spec in KNOBS.items():
        r = top.section(section)
        for name, (kind, allowed) in spec.items():
            knobs[f"{section}.{name}"] = _read_knob(r, name, kind, allowed)
        if section == "gguf":
            if r.has("types") == r.has("bits_per_weight"):
                raise r.error("-", "give exactly one of `types` (a GGML type per tensor class, sampled) or "
                                   "`bits_per_weight` (the solver picks the types within it)")
            if r.has("bits_per_weight"):
                knobs["gguf.bits_per_weight"] = _read_knob(r, "bits_per_weight", "float", (1.5, 32.0))
                excluded = r.raw("exclude", default=[])
                if not isinstance(excluded, list) or not all(e in CANDIDATE_TYPES for e in excluded):
                    raise r.error("exclude", f"got {excluded!r}; give a list of GGML types among "
                                             f"{', '.join(CANDIDATE_TYPES)}")
            else:
                excluded = []
                knobs["gguf.imatrix"] = _read_bool_knob(r, "imatrix")
                t = r.section("types")
                for cls in TYPE_CLASSES:
                    if t.has(cls):
                        knobs[f"gguf.types.{cls}"] = _read_knob(t, cls, "choice", CANDIDATE_TYPES)
                t.done()
        r.done()
    top.done()
    return LMSpace(path=path, knobs=knobs, excluded_types=tuple(excluded))


def check_against_teacher(space: LMSpace, limits, teacher_shape) -> None:
    check_cuts(space, teacher_shape.layers, limits.ffn, limits.heads // limits.head_group)


def check_cuts(space: LMSpace, layers: int, ffn: int, kv_groups: int) -> None:
    """No cut may ask for more than the teacher has (`layers`, `ffn` channels, `kv_groups`: read from its config or
    GGUF header before loading it), and keep one layer at least; FFN widths must be whole 32-element blocks
    (every GGML type's rows are)."""
    odd = [v for v in values(space.knobs["cut.ffn"]) if v % 32]
    if odd:
        raise ConfigError(space.path, "cut.ffn", f"{odd[0]} is not a multiple of 32; GGUF rows are stored in blocks of "
                                                 "32 (256 for k-quants): use multiples of 32, or of 256")
    for name, limit, what in (("cut.drop_layers", layers - 1, "layers to drop (one must stay)"),
                              ("cut.ffn", ffn, "FFN channels"),
                              ("cut.kv_groups", kv_groups, "KV head groups")):
        top_value = max(values(space.knobs[name]))
        if top_value > limit:
            raise ConfigError(space.path, name, f"up to {top_value} asked, but the teacher has {limit} {what}; "
                                                f"keep it <= {limit}")

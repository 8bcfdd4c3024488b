"""Generated docs: docs/spaces.md from the knob tables (space.KNOBS, flows/causal_lm/space.KNOBS) and the shipped
space files, so the page cannot drift from what `load_space` accepts; and the latest bench summaries (results/bench/
*.md, git-ignored) copied to docs/bench/ and listed in docs/benchmarks.md (search/bench/notes.py). `python -m
search.docs` rewrites both; `--check` exits 1 when a committed page differs (tests/test_docs.py runs the check). Each
knob's sentence is here; a knob added to a table without one fails the check."""
from __future__ import annotations

import sys
from pathlib import Path

from .flows.causal_lm import space as lm_space
from . import space
from .run_dir import atomic_write_text

PAGE = Path(__file__).resolve().parent.parent / "docs" / "spaces.md"
BENCHMARKS = PAGE.with_name("benchmarks.md")

# knob -> (where it is sampled, what it does)
CLASSIFIER = {
    "distill.layers": ("always", "encoder layers of the student: evenly spaced teacher layers, the last always kept"),
    "distill.hidden": ("always", "width kept from the teacher (its most active dimensions); a multiple of the "
                                 "teacher's head width (MiniLM: 32)"),
    "distill.heads": ("always", "attention heads per layer, the most important kept; capped at hidden / head width"),
    "distill.ffn": ("always", "FFN neurons per layer, the most important kept"),
    "distill.temperature": ("always", "softmax temperature of the teacher's soft targets"),
    "distill.alpha": ("always", "weight of the soft-target loss against the label loss"),
    "distill.epochs": ("always", "distillation epochs (the first rung; `promote` may add a second)"),
    "distill.vocab": ("always", "`task`: keep only the embedding rows of tokens in the training text (unseen ids "
                                "read [UNK]'s row); `full`: the teacher's vocabulary"),
    "distill.init": ("always", "`teacher`: weights cut from the teacher; `random`: the same shape, fresh weights "
                               "(a baseline)"),
    "distill.hidden_weight": ("always", "> 0 adds hidden-state transfer: MSE to the mapped teacher layer on the kept "
                                        "dimensions"),
    "distill.attention_weight": ("always", "> 0 adds attention transfer: KL to the attention of the teacher heads "
                                           "each student head was cut from"),
    "prune.type": ("always", "`unstructured` (per-weight), `structured` (heads and FFN neurons physically removed), "
                             "`2:4` (two of every four weights), or `none`"),
    "prune.ratio": ("unstructured, structured", "share of weights (or heads and neurons) removed; 2:4 is 0.5"),
    "prune.recovery_steps": ("any pruning", "KD steps with the masks held, shared by the rounds"),
    "prune.iterations": ("unstructured, structured", "1: one-shot; k: k prune-then-recover rounds on a cubic "
                                                     "schedule"),
    "prune.scope": ("unstructured", "`layer`: the ratio per matrix; `global`: one magnitude threshold for all"),
    "prune.criterion": ("unstructured, 2:4", "`magnitude` (abs(w)), or `wanda` (abs(w) times the input norm on calibration inputs)"),
    "prune.importance": ("structured", "ranking of heads and neurons: `norm`, or first-order Taylor (`gradient`)"),
    "quant.bits": ("always", "32: fp32; 8: int8 (weight-only or with int8 activations); 4 and 2: weight-only "
                             "(MatMulNBits; embeddings at 4 bits too)"),
    "quant.group_size": ("weight-only", "weights per scale; `channel`: one scale per output channel"),
    "quant.activations": ("8 bits", "`none` (weight-only), `dynamic_int8` (quantize_dynamic) or `static_int8` "
                                    "(calibrated QDQ, per channel)"),
    "quant.method": ("weight-only", "rounding: round-to-nearest (`rtn`) or `gptq` (error compensation with each "
                                    "layer's calibration Hessian)"),
    "quant.high_precision_fraction": ("4 and 2 bits", "share of layers kept at 8 bits, the most sensitive "
                                                      "(measured) first; with `solver`: how far from the cheapest to "
                                                      "the dearest allocation the bytes may go"),
    "quant.qat_steps": ("weight-only with `rtn`", "quantization-aware KD steps on the exact shipped grid"),
    "quant.smooth_alpha": ("`static_int8`", "SmoothQuant migration strength (0: off)"),
    "quant.precision": ("4 and 2 bits", "`uniform`: one bits/group for every layer; `solver`: each layer's by an "
                                        "exact MILP on measured sensitivity ([search.md](search.md))"),
}
LANGUAGE_MODEL = {
    "cut.drop_layers": ("always", "blocks removed, the least influential first (1 - cos(input, output) on "
                                  "calibration text); one must stay"),
    "cut.ffn": ("always", "FFN channels kept per layer (activation x weight norm); a multiple of 32 (256 keeps "
                          "k-quants usable)"),
    "cut.kv_groups": ("always", "KV head groups kept, each with its query heads"),
    "recovery.steps": ("after a cut", "KD steps on the teacher's next-token distributions, one 256-token "
                                      "calibration window each"),
    "gguf.bits_per_weight": ("with the solver", "the budget of bits per weight within which an exact solver picks "
                                                "the GGML type of each tensor class (lowest predicted KLD)"),
    "gguf.exclude": ("fixed, with the solver", "GGML types the solver may not use (e.g. the teacher's own grid)"),
    "gguf.imatrix": ("with `types`", "quantize with an importance matrix from the calibration text"),
    "gguf.types.<class>": ("with `types`", "the GGML type of that tensor class, sampled"),
}


def _range(kind: str, allowed) -> str:
    if kind == "choice":
        return ", ".join(f"`{a}`" for a in allowed)
    lo, hi = allowed
    return f"{lo} to {hi}" + (" (integer)" if kind == "int" else "")


def _value(knob) -> str:
    if isinstance(knob, space.Range):
        n = lambda v: f"{int(v)}" if knob.integer else f"{v:g}"  # noqa: E731
        return f"{n(knob.low)} to {n(knob.high)}" + (f" step {n(knob.step)}" if knob.step else "")
    if isinstance(knob, space.Choice):
        return ", ".join(f"`{o}`" for o in knob.options)
    return f"`{knob}`"


def _table(rows) -> list[str]:
    return ["| knob | allowed | `default` space | sampled when | what it does |", "|---|---|---|---|---|", *rows]


def render() -> str:
    default = space.load_space("default")
    llm = lm_space.load_lm_space("llm")
    out = ["# Search spaces: every knob", "",
           "<!-- generated by `python -m search.docs` from the knob tables in search/space.py and "
           "search/flows/causal_lm/space.py; do not edit -->", "",
           "A space file (`spaces/*.yaml`; `--space` takes a path or a bare name from `spaces/`) gives each knob as a "
           "fixed value, a list (categorical) or `{low, high, step}`; the dotted keys are the Optuna parameter names. "
           "A knob is sampled only where it acts (column \"sampled when\"). Values outside \"allowed\" are refused "
           "with one line naming the file and key (exit 2). No knob may ask for more than the teacher has (layers, "
           "width, FFN), since students are cut from it.", "",
           "## Text classification (onnxruntime targets)", "",
           "Sections `distill`, `prune`, `quant`; the shipped spaces are `default` (below) and the tests' own. Knobs "
           "marked optional may be left out and take the value that means \"off\".", ""]
    rows = []
    for section, spec in space.KNOBS.items():
        for name, (kind, allowed) in spec.items():
            key = f"{section}.{name}"
            where, what = CLASSIFIER[key]
            opt = f" (optional: `{space.OPTIONAL[key]}`)" if key in space.OPTIONAL else ""
            rows.append(f"| `{key}` | {_range(kind, allowed)} | {_value(default.knobs[key])} | {where}{opt} | {what} |")
    out += _table(rows)
    out += ["", "Two optional sections shape the search rather than the recipe ([search.md](search.md)):", "",
            f"- `promote: {{epochs, within, patience}}` (default space: epochs {default.promote.epochs:g}, within "
            f"{default.promote.within:g}, patience {default.promote.patience}): a second rung of `epochs` more "
            "distillation for a trial that could still reach the floor, early-stopped on held-out training rows "
            "after `patience` half-epoch checks without improvement. Without it every trial trains once.",
            f"- `exploit: {{variants}}` (default space: {default.exploit.variants}): recipes queued with a front "
            "student's (cached) distillation and other pruning and quantization. Without it every recipe comes from "
            "the sampler.", "",
            "onnxruntime refuses 2-bit blocks wider than 256, so 2-bit per-channel over a wider input is rejected "
            "before training.", "",
            "## Language models (llama.cpp targets)", "",
            "Sections `cut`, `recovery`, `gguf`; `gguf` gives exactly one of `bits_per_weight` (the solver picks the "
            "types: `spaces/llm.yaml`) or `imatrix` + `types` per tensor class (sampled: `spaces/llm_types.yaml`). "
            f"Tensor classes: {', '.join(f'`{c}`' for c in lm_space.TYPE_CLASSES)}. GGML types: "
            f"{', '.join(f'`{t}`' for t in lm_space.CANDIDATE_TYPES)}.", ""]
    allowed = {f"{s}.{n}": _range(k, a) for s, spec in lm_space.KNOBS.items() for n, (k, a) in spec.items()}
    allowed |= {"gguf.bits_per_weight": _range("float", (1.5, 32.0)), "gguf.exclude": "a list of GGML types",
                "gguf.imatrix": "`true`, `false`", "gguf.types.<class>": "GGML types"}
    shown = {**llm.knobs, "gguf.exclude": llm.excluded_types}
    rows = []
    for key, (where, what) in LANGUAGE_MODEL.items():
        v = shown.get(key)
        value = ", ".join(f"`{t}`" for t in v) if isinstance(v, tuple) else ("" if v is None else _value(v))
        rows.append(f"| `{key}` | {allowed[key]} | {value} | {where} | {what} |")
    out += [r.replace("`default` space", "`llm` space") for r in _table(rows)]
    return "\n".join(out) + "\n"


def missing() -> list[str]:
    """Knobs of the tables without a sentence here, and sentences for knobs no table has."""
    have = {f"{s}.{n}" for s, spec in space.KNOBS.items() for n in spec}
    lm = {f"{s}.{n}" for s, spec in lm_space.KNOBS.items() for n in spec}
    return sorted((have ^ set(CLASSIFIER)) | (lm - set(LANGUAGE_MODEL)))


def main(argv: list[str]) -> int:
    from .__main__ import RESULTS_DIR
    from .bench import notes

    if missing():
        print(f"search/docs.py: no sentence for knob(s) {', '.join(missing())}", file=sys.stderr)
        return 1
    text = render()
    if "--check" in argv:
        stale = [p for p, want in ((PAGE, text), (BENCHMARKS, notes.render(BENCHMARKS.read_text())))
                 if not p.is_file() or p.read_text() != want]
        for p in stale:
            print(f"{p} differs from what generates it: run python -m search.docs", file=sys.stderr)
        return 1 if stale else 0
    atomic_write_text(PAGE, text)
    print(f"wrote {PAGE}")
    for line in notes.sync(RESULTS_DIR / "bench"):
        print(line)
    atomic_write_text(BENCHMARKS, notes.render(BENCHMARKS.read_text()))
    print(f"wrote {BENCHMARKS} (latest bench summaries)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

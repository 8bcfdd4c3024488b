"""The seam, as docs/architecture.md states it: outside the model-family modules (families/bert_cls.py, families/llama_lm.py
and the Hugging Face text conventions they share, families/hf_text.py) no file names BERT, input_ids,
attention_mask or logits; outside the onnxruntime backend none imports onnxruntime or names model.onnx."""
from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "search"
FAMILY_WORDS = re.compile(r"\b(bert|input_ids|attention_mask|logits)\b", re.IGNORECASE)
RUNTIME = re.compile(r"^\s*(import|from) onnxruntime|model\.onnx")


def offenders(pattern: re.Pattern, *allowed: str) -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        if rel.startswith(allowed):
            continue
        out += [f"{rel}:{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)
                if pattern.search(line)]
    return out


def test_only_the_family_modules_name_bert_and_the_model_inputs():
    assert offenders(FAMILY_WORDS, "search/families/bert_cls.py", "search/families/llama_lm.py",
                     "search/families/hf_text.py") == []
    assert not FAMILY_WORDS.search((PACKAGE / "families" / "llama_lm.py").read_text().replace("input_ids", "")
                                   .replace("attention_mask", "").replace("logits", ""))  # and it names no BERT


def test_only_the_onnxruntime_backend_imports_it_or_names_its_artifact():
    assert offenders(RUNTIME, "search/backends/onnxruntime/") == []


def test_the_checks_can_fail():
    assert FAMILY_WORDS.search("out = model(input_ids=ids).logits")
    assert RUNTIME.search("import onnxruntime as ort") and RUNTIME.search('path / "model.onnx"')


# -- the one-engine seam (issue 30): task kinds are flows, runtimes are backends, the core asks neither which it is
LLAMA_CPP_IMPORT = re.compile(r"^\s*(import llama_cpp|from llama_cpp|from \S*backends\S* import .*\bllama_cpp\b|"
                              r"from \S*backends\.llama_cpp\b|import \S*backends\.llama_cpp\b)")
KIND_CHECK = re.compile(r"\bis_lm\b|\bLM_RUNTIMES\b|\bPreparedLM\b|\bLMSpace\b|\bLMContext\b|\bpipeline_for\b|"
                        r"isinstance\([^)]*\b(Prepared|Space|Context|Candidate|Recipe|Flow)\w*\)|"
                        r"(==|!=|\bin)\s*\(?[\"'](causal_lm|classification|llama\.cpp|onnxruntime)[\"']")
NAMES_A_FAMILY = re.compile(r"families\.get\([\"']|\bget\([\"'](llama_lm|bert_cls)[\"']\)")


def test_only_the_llama_cpp_backend_and_the_causal_lm_flow_import_llama_cpp():
    assert offenders(LLAMA_CPP_IMPORT, "search/backends/", "search/flows/causal_lm/") == []


def test_no_kind_checks_outside_the_flows():
    assert offenders(KIND_CHECK, "search/flows/") == []


def test_no_backend_names_a_model_family():
    assert [o for o in offenders(NAMES_A_FAMILY) if o.startswith("search/backends/")] == []


def test_every_backend_implements_the_backend_contract():
    from search import backends
    from search.backends.base import Backend

    for name in backends.names():
        backend = backends.get(name)
        assert isinstance(backend, Backend) and backend.name == name and backend.artifact_name


def test_every_flow_implements_the_flow_contract_and_reads_its_targets():
    from search import flows
    from search.flows.base import Flow

    for name in flows.names():
        flow, spec = flows.get(name), flows.inputs(name)
        assert isinstance(flow, Flow) and flow.NAME == name and flow.METRIC_COLUMNS and flow.SUMMARY_KEYS
        assert spec.RUNTIMES and callable(spec.read_workload) and callable(spec.read_budget)


def _module_imports(path: Path) -> set[str]:
    """The search modules a module imports when it is imported (module level only: imports inside functions run
    later and cannot make a circle at import time)."""
    import ast

    module = path.relative_to(PACKAGE.parent).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        # a module's own packages are imported before it: never a circle through them
        out |= {n for n in names if n.startswith("search") and not module.startswith(n + ".")}
    return out


def test_no_import_circles():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = path.relative_to(PACKAGE.parent).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
        modules[name] = path
    graph = {m: {i for i in _module_imports(p) if i in modules and i != m} for m, p in modules.items()}

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return trail
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))
        return None

    cycles = {tuple(sorted(c)) for m in graph if (c := cycle_from(m))}
    assert not cycles, cycles


def test_the_new_checks_can_fail():
    assert LLAMA_CPP_IMPORT.search("from ..backends import llama_cpp as lc")
    assert LLAMA_CPP_IMPORT.search("    from .backends.llama_cpp import mixes")
    assert KIND_CHECK.search("if outputs.is_lm(budget):") and KIND_CHECK.search('if runtime == "llama.cpp":')
    assert KIND_CHECK.search("isinstance(prepared, PreparedLM)") and KIND_CHECK.search('lm = kind in ("causal_lm",)')
    assert NAMES_A_FAMILY.search('standard = get("llama_lm").to_standard(model)')

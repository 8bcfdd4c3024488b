"""The seam, as the README states it: outside the model-family modules (families/bert_cls.py, families/llama_lm.py
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

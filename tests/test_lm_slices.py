"""A language model's quality on every slice (a language): task files name slices, each slice gets its own
evaluation windows and an equal share of the calibration text, every candidate's KLD is measured and bounded per
slice, and the ceiling holds on each (the whole search on a tiny llama is a slow check)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from search import confidence
from search.errors import ConfigError
from search.flows.causal_lm import task as lm
from search.tasks import causal_lm

WORDS = {"a": "the quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun".split(),
         "b": "el rapido zorro marron salta sobre el perro perezoso mientras el gato duerme al sol".split()}


def test_per_slice_scores_are_each_slices_own_tokens_and_windows():
    rng = np.random.default_rng(0)
    t = torch.log_softmax(torch.as_tensor(rng.normal(size=(60, 20))), -1)
    s_logits = rng.normal(size=(60, 20))
    nxt = rng.integers(0, 20, 60)
    parts = [causal_lm.score_window(t[i:i + 10], s_logits[i:i + 10], nxt[i:i + 10]) for i in range(0, 60, 10)]
    scores = causal_lm.TokenScores.concat(parts)
    names = np.array(["en", "es", "en", "es", "en", "ja"])  # six windows, three slices
    out = causal_lm.summarize_slices(scores, names)
    kld = scores.kld.reshape(6, 10)
    for name in ("en", "es", "ja"):
        rows = names == name
        assert out[f"kld_mean@{name}"] == pytest.approx(kld[rows].mean())
        assert out[f"se_windows@{name}"] == rows.sum()
    assert out["kld_mean_se@en"] == pytest.approx(kld[names == "en"].mean(1).std(ddof=1) / math.sqrt(3))
    assert math.isnan(out["kld_mean_se@ja"])  # one window: no error across windows, and so no bound
    b = confidence.bounds({**out, "kld_mean": 0.0, "kld_mean_se": 0.0, "tpot_p99_ms_upper": 1.0}, {},
                          {"quality": "kld_mean", "latency": "tpot_p99_ms", "kld_ceiling": 100.0, "tpot_p99_ms": 10,
                           "memory_mb": 1, "slices": {"en": 100.0, "ja": 100.0}})
    assert b["kld_mean@en"]["meets"] and "3 evaluation windows" in b["kld_mean@en"]["method"]
    assert not b["kld_mean@ja"]["meets"]  # nothing unvouched ships


def test_calibration_text_is_interleaved_block_by_block():
    mixed = lm.mixed_calibration([np.zeros(1024, np.int64), np.ones(1024, np.int64)])
    block = lm.CALIBRATION_BLOCK
    assert len(mixed) == 2048 and mixed[:block].max() == 0 and mixed[block:2 * block].min() == 1
    assert mixed[:1024].mean() == 0.5  # any prefix of whole block pairs: an equal share of each slice


def _texts(tmp_path, n=3000):
    rng = np.random.default_rng(0)
    for name, words in WORDS.items():
        (tmp_path / f"{name}.txt").write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(n // 12)))


def _task_file(tmp_path, data: str):
    from search.backends.llama_cpp import gguf_file
    from test_llama_cpp import tiny_llama

    if not (tmp_path / "teacher.gguf").exists():
        gguf_file.write_f32(tiny_llama(), tmp_path / "teacher.gguf", lm.default_lm_task().teacher_gguf)
    (tmp_path / "task.yaml").write_text(f"task_type: causal_lm\nteacher: teacher.gguf\ndata: {data}\n")
    return tmp_path / "task.yaml"


SLICED = "{slices: {a: {text: a.txt}, b: {text: b.txt}}, window_tokens: 64, eval_windows: 2, calibration_tokens: 1024}"


def test_a_task_file_with_slices_prepares_windows_per_slice_and_a_mixed_calibration(tmp_path):
    _texts(tmp_path)
    task = lm.load_lm_task(str(_task_file(tmp_path, SLICED)))
    assert [s.name for s in task.slices] == ["a", "b"]
    assert task.slices[0].calibration.lines == lm.CALIBRATION_LINES and task.slices[0].evaluation.lines == lm.EVALUATION_LINES
    lm.check_files(task)
    prepared = lm.prepare(task, tmp_path / "cache", log=lambda s: None)
    assert list(prepared.window_slices) == ["a", "a", "b", "b"] and prepared.windows.ids.shape == (4, 64)
    assert len(prepared.calibration_ids) == 1024
    assert {"kld_mean@a", "teacher_perplexity@b", "se_windows@a"} <= set(prepared.teacher_scores)
    vocab = prepared.tokenizer
    first = vocab.decode(prepared.calibration_ids[:lm.CALIBRATION_BLOCK].tolist())
    second = vocab.decode(prepared.calibration_ids[lm.CALIBRATION_BLOCK:2 * lm.CALIBRATION_BLOCK].tolist())
    assert "fox" in first and "zorro" not in first and "zorro" in second  # slice a's block, then slice b's
    # held-out text is the second half of each file, calibration its first 45%: they share no line
    text = (tmp_path / "a.txt").read_text().splitlines()
    assert task.slices[0].evaluation.read("text", "t", "k").splitlines()[0] == text[len(text) // 2]


@pytest.mark.parametrize("data, key", [
    ("{slices: {a: {text: a.txt}}}", "data.slices"),
    ("{slices: {a: {text: a.txt}, b: {text: missing.txt}}}", "data.slices.b.text"),
    ("{slices: {a: {evaluation: a.txt, calibration: a.txt}, b: {text: b.txt}}}", "data.slices.a.evaluation"),
    ("{slices: {a: {text: a.txt}, b: {text: b.txt}}, calibration: a.txt}", "data.calibration"),
    ("{slices: {a: {text: a.txt}, b: {txt: b.txt}}}", "data.slices.b.evaluation"),
    ("{slices: {a: {text: a.txt}, b: {text: b.txt}}, calibration_tokens: 100000}", "data.slices.a.calibration"),
])
def test_bad_lm_slices_name_the_key(tmp_path, data, key):
    _texts(tmp_path)
    with pytest.raises(ConfigError) as err:
        lm.check_files(lm.load_lm_task(str(_task_file(tmp_path, data))))
    assert err.value.key == key, str(err.value)


@pytest.mark.slow  # a whole search in llama.cpp (~2 min): .ci/run runs it with the slow checks
def test_an_lm_run_with_slices_bounds_every_slice(tmp_path):
    from conftest import run_search
    from test_lm_run import TINY_LM_SPACE, TINY_LM_TARGET

    _texts(tmp_path)
    task = _task_file(tmp_path, SLICED)
    (tmp_path / "space.yaml").write_text(TINY_LM_SPACE)
    (tmp_path / "target.yaml").write_text(TINY_LM_TARGET)
    results = tmp_path / "results"
    proc = run_search(results, "run", "--target", str(tmp_path / "target.yaml"), "--task", str(task),
                      "--space", str(tmp_path / "space.yaml"), "--trials", "2", "--run-id", "lm")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    selected = json.loads((results / "lm" / "selected.json").read_text())
    assert selected["budget"]["slices"] == {"a": 5.0, "b": 5.0}
    for s in ("a", "b"):
        assert f"kld_mean@{s}" in selected["metrics"] and selected["bounds"][f"kld_mean@{s}"]["meets"]
        assert "2 evaluation windows" in selected["bounds"][f"kld_mean@{s}"]["method"]
    assert any("binding slice" in w for w in selected["why"])


def test_the_sensitivity_sweep_scores_as_many_windows_as_one_slice_has_taken_from_every_slice():
    from types import SimpleNamespace

    from search.flows.causal_lm.pipeline import sweep_windows

    names = np.array(["en"] * 8 + ["es"] * 8 + ["de"] * 8 + ["ja"] * 8)
    rows = sweep_windows(SimpleNamespace(window_slices=names, task=SimpleNamespace(eval_windows=8)))
    assert rows == [0, 1, 8, 9, 16, 17, 24, 25]
    assert sweep_windows(SimpleNamespace(window_slices=None, task=SimpleNamespace(eval_windows=8))) is None


@pytest.mark.skipif(not all((lm.DEBIAN_REFERENCE / f"debian-reference.{x}.txt.gz").is_file() for x in lm.LANGUAGES),
                    reason="the debian-reference-* packages are not installed (make setup installs them as root)")
def test_the_built_in_multilingual_task_holds_the_same_guide_in_four_languages():
    task = lm.languages_lm_task()
    assert task.name == "smollm2_languages" and [s.name for s in task.slices] == ["en", "es", "de", "ja"]
    lm.check_files(task)  # every slice has its windows and its calibration share, by the teacher's tokenizer
    es = task.slices[1]
    held_out, calibration = es.evaluation.read("text", "t", "k"), es.calibration.read("text", "t", "k")
    assert "Debian" in held_out and not set(held_out.splitlines()[:50]) & set(calibration.splitlines()[-50:]) - {""}


def test_the_llm_bench_says_which_rows_meet_the_ceiling_in_one_language_and_miss_it_in_another():
    from types import SimpleNamespace

    import pandas as pd

    from search.flows.causal_lm import bench

    task = SimpleNamespace(slices=[SimpleNamespace(name="en"), SimpleNamespace(name="es")], eval_windows=8)

    def row(setting, kind, en, es):
        return {"setting": setting, "kind": kind, "file_mb": 80.0, "kld_mean@en": en, "kld_mean_se@en": 0.003,
                "kld_mean@es": es, "kld_mean_se@es": 0.004}
    frame = pd.DataFrame([row("Q8_0", "preset", 0.004, 0.007), row("Q4_K_M", "preset", 0.05, 0.11),
                          row("Q4_K_M+imatrix calibration en only", "calibration en only", 0.04, 0.12),
                          row("Q4_K_M+imatrix calibration mixed", "calibration mixed", 0.045, 0.09)])
    text = "\n".join(bench._slices_md(frame, task))
    assert "Ceiling 0.1 (the `kld_ceiling` of targets/raspberry_pi5_llm.yaml)" in text
    assert "| Q4_K_M | 80.0 | 0.0500 ± 0.0030 | **0.1100** ± 0.0040 | en |" in text
    assert "over it on another slice: 2 row(s): Q4_K_M (es); Q4_K_M+imatrix calibration en only (es)" in text
    assert "| Q4_K_M+imatrix | mixed | 0.0450 ± 0.0030 | 0.0900 ± 0.0040 |" in text

"""The one-engine refactor (issue 30) must not change what a language-model run measures: a fixed-seed tiny run
(a tiny llama teacher given as a GGUF; a spec-only llama.cpp device, so speed and memory are estimated and
deterministic; KLD measured by llama.cpp at one thread) is compared with tests/golden/tiny_lm_run.json, written
once by the code before the refactor with this same module (`python tests/test_golden_lm.py`)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_golden import assert_same_trials

GOLDEN = Path(__file__).with_name("golden") / "tiny_lm_run.json"
SPACE = """
cut: {drop_layers: {low: 0, high: 1}, ffn: {low: 64, high: 128, step: 64}, kv_groups: 2}
recovery: {steps: {low: 0, high: 2, step: 2}}
gguf: {bits_per_weight: {low: 4.5, high: 8.5, step: 4.0}}
"""
TARGET = """
name: tiny_llm_estimated
device:
  latency: estimated
  runtime: llama.cpp
  memory_mb: 8192
  memory_bandwidth_gbps: 17
  peak_tops: {fp32: 0.154, fp16: 0.307, int8: 0.614}
workload: {prompt_tokens: 16, gen_tokens: 32, context_tokens: 128}
budget: {memory_mb: 4000, tpot_p99_ms: 1000, kld_ceiling: 5.0}
"""
EXACT = ("trial", "state", "label", "types", "types_written", "layers", "parameters")
CLOSE = ("memory_mb", "weight_mb", "kv_cache_mb", "file_mb", "bits_per_weight", "ttft_ms", "tpot_p50_ms",
         "tpot_p99_ms", "predicted_memory_mb", "predicted_tpot_p99_ms")
# llama.cpp's KLD at one thread over the same windows; the tolerance only absorbs another CPU's float kernels
# (recovery training is seeded and single-threaded)
QUALITY = ("kld_mean", "top1_agreement", "perplexity_ratio")
QUALITY_TOLERANCE = 0.02


def tiny_lm_run(root: Path) -> dict:
    """Run the tiny search into root/results/golden; what the golden file keeps of it."""
    from conftest import run_search
    from search.backends.llama_cpp import gguf_file
    from search.flows.causal_lm import task as lm
    from test_llama_cpp import tiny_llama

    words = "the quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun".split()
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("calib.txt", 3000), ("heldout.txt", 1500)):
        (root / name).write_text(" ".join(rng.choice(words, n)))
    gguf_file.write_f32(tiny_llama(), root / "teacher.gguf", lm.default_lm_task().teacher_gguf)
    (root / "task.yaml").write_text(
        "task_type: causal_lm\nteacher: teacher.gguf\n"
        "data: {calibration: calib.txt, evaluation: heldout.txt, window_tokens: 64, eval_windows: 2, "
        "calibration_tokens: 1024}\n")
    (root / "space.yaml").write_text(SPACE)
    (root / "target.yaml").write_text(TARGET)
    results = root / "results"
    proc = run_search(results, "run", "--target", str(root / "target.yaml"), "--task", str(root / "task.yaml"),
                      "--space", str(root / "space.yaml"), "--trials", "3", "--threads", "1", "--device", "cpu",
                      "--run-id", "golden")
    assert proc.returncode in (0, 3), proc.stdout[-3000:] + proc.stderr[-3000:]
    run = results / "golden"
    frame = pd.read_csv(run / "trials.csv")
    keep = [c for c in frame.columns if c in EXACT + CLOSE + QUALITY or c.startswith("params_")]
    rows = json.loads(frame[keep].to_json(orient="records"))
    teacher = json.loads((run / "teacher.json").read_text())
    selected = json.loads((run / "selected.json").read_text())
    return {"teacher": {k: teacher[k] for k in ("kld_mean", "weight_mb", "tpot_p99_ms", "memory_mb")},
            "selected": selected["trial"], "trials": rows}


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    return root, tiny_lm_run(root)


@pytest.mark.slow  # ~1.5 min of llama.cpp and recovery; .ci/run runs it with the slow checks
def test_tiny_lm_run_measures_what_the_code_before_the_one_engine_refactor_measured(lm_run):
    _, got = lm_run
    want = json.loads(GOLDEN.read_text())
    for key in ("weight_mb", "tpot_p99_ms", "memory_mb"):
        assert got["teacher"][key] == pytest.approx(want["teacher"][key], rel=1e-6), key
    assert got["teacher"]["kld_mean"] == pytest.approx(want["teacher"]["kld_mean"], abs=QUALITY_TOLERANCE)
    assert got["selected"] == want["selected"]
    assert_same_trials(got["trials"], want["trials"], EXACT, CLOSE, QUALITY, QUALITY_TOLERANCE)


@pytest.mark.slow  # shares the run above
def test_replan_of_an_lm_run_reprices_its_ggufs_without_training(lm_run):
    """Onto its own target: every stored trial's speed and memory come back as the run estimated them. Onto the
    Raspberry Pi 5: the choice equals one recomputed by hand from the stored trials (the decode estimate of each
    trial's shape and GGML types on the Pi's spec; KLD as stored)."""
    from conftest import run_search
    from search import confidence, families, pareto
    from search.families.base import ModelShape
    from search.flows.causal_lm import pipeline
    from search.flows.causal_lm.recipe import LMRecipe
    from search.outputs import load_study
    from search.run_dir import RunDir
    from search.target import load_target

    root, _ = lm_run
    results = root / "results"
    src = RunDir(results / "golden")
    stored = {t.number: t.user_attrs for t in load_study(src.root).get_trials(deepcopy=False)
              if t.state.name == "COMPLETE"}
    proc = run_search(results, "replan", "golden", "--target", str(root / "target.yaml"), "--run-id", "same")
    assert proc.returncode in (0, 3), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "nothing is trained" in proc.stdout and "Traceback" not in proc.stderr
    same = {t.user_attrs["replan_of_trial"]: t.user_attrs for t in load_study(results / "same").get_trials()}
    assert set(same) == set(stored)
    for n, a in stored.items():
        for key in ("memory_mb", "tpot_p99_ms", "tpot_p50_ms", "ttft_ms", "kv_cache_mb", "tpot_p99_ms_upper"):
            assert same[n][key] == pytest.approx(a[key], rel=1e-9), (n, key)
        assert same[n]["kld_mean"] == a["kld_mean"] and same[n]["types"] == a["types"]

    proc = run_search(results, "replan", "golden", "--target", "raspberry_pi5_llm")
    assert proc.returncode in (0, 3), proc.stdout[-3000:] + proc.stderr[-3000:]
    out = RunDir(results / "golden.replan-raspberry_pi5_8gb_llm")
    got = json.loads(out.selected_json.read_text())
    target = load_target("raspberry_pi5_llm")
    saved = json.loads(src.budget_json.read_text())
    family, teacher_shape = families.get(saved["family"]), ModelShape.from_json(saved["teacher_shape"])
    budget = got["budget"]
    assert budget["memory_mb"] == 160 and budget["kld_ceiling"] == 0.1 and budget["flow"] == "causal_lm"
    rows = []
    for n, a in stored.items():
        recipe = LMRecipe.from_json(a["recipe"])
        est = pipeline._estimate(family, target, pipeline.planned_shape(teacher_shape, recipe), recipe)
        upper, _ = confidence.latency_bound(est.tpot_p99_ms, (), "estimated", target.device, budget["confidence"])
        rows.append({"trial": n, "params": {}, "metrics": {
            "kld_mean": a["kld_mean"], "kld_mean_se": a["kld_mean_se"], "se_windows": a["se_windows"],
            "tpot_p99_ms": est.tpot_p99_ms,
            "tpot_p99_ms_upper": upper, "ttft_ms": est.ttft_ms, "memory_mb": est.memory_mb,
            "latency_bound_method": "recomputed"}})
    teacher = json.loads(out.teacher_json.read_text())

    def vouch(r):
        return confidence.problems(confidence.bounds(r["metrics"], teacher, budget), budget)

    want = pareto.select(rows, budget, "accuracy", vouch)
    assert got["meets_budget"] == want["meets_budget"]
    chosen = None if got["trial"] is None else got.get("replan_of", {}).get("trial")
    assert chosen == (want["selected"]["trial"] if want["selected"] else None)


if __name__ == "__main__":  # written once by the code before the refactor: python tests/test_golden_lm.py
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    with tempfile.TemporaryDirectory() as tmp:
        result = tiny_lm_run(Path(tmp))
    GOLDEN.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))

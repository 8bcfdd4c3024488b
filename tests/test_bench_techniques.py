"""`bench techniques` machinery on the tiny task: every row is a measured artifact, ratios and verdicts
follow from the numbers (the real-size run is `python -m search bench techniques`)."""
from __future__ import annotations

import math

import numpy as np

import pandas as pd
import pytest

from conftest import write_tiny_task
from search.bench import summary, techniques
from search.bench.techniques import Comparison, Setting
from search.candidate import Candidate, DistillParams, PruneParams, QuantParams

TARGET = """name: tiny_local
device: {latency: measured, memory_mb: 1000, threads: 1}
workload: {batch_size: 1, sequence_length: 16}
budget: {memory_mb: 500, p99_latency_ms: 100, accuracy_floor: {max_drop: 0.5}}
"""
REQUIRED = ["setting", "accuracy", "accuracy_delta", "artifact_mb", "compression_ratio", "p50_ms", "p99_ms"]


def test_bench_rows_are_measured_artifacts_and_verdicts_follow_the_numbers(tmp_path):
    from search.flows.text_classification.pipeline import make_context
    from search.target import load_target
    from search.tasks import load_task
    from search.tasks.teacher import prepare

    task = write_tiny_task(tmp_path / "task")
    (tmp_path / "target.yaml").write_text(TARGET)
    prepared = prepare(load_task(str(task)), tmp_path / "cache", log=lambda s: None)
    ctx = make_context(prepared, load_target(str(tmp_path / "target.yaml")), tmp_path / "cache", 1)
    d = DistillParams(1, 32, 1, 64, epochs=1)
    settings = [
        Setting("teacher fp32", None, quant=QuantParams(32)),
        Setting("student fp32", Candidate(d, PruneParams(), QuantParams(32))),
        Setting("w4 rtn", Candidate(d, PruneParams(), QuantParams(4, 32)), "student fp32"),
        Setting("w4 gptq", Candidate(d, PruneParams(), QuantParams(4, 32, method="gptq")), "student fp32"),
        Setting("pruned x2 wanda", Candidate(d, PruneParams("unstructured", 0.5, 4, iterations=2, criterion="wanda"),
                                             QuantParams(2, 32, high_precision_fraction=1.0)), "student fp32"),
        Setting("broken", Candidate(DistillParams(1, 32, 2, 64), PruneParams(), QuantParams(32))),  # 2 heads > 32/32
    ]
    comparisons = [Comparison("gptq vs rtn", "w4 rtn", "w4 gptq", "accuracy"),
                   Comparison("smaller", "teacher fp32", "w4 rtn", "memory")]
    frame = techniques.run(ctx, tmp_path / "out", settings, comparisons, log=lambda s: None)

    csv = pd.read_csv(tmp_path / "out" / "techniques-tiny.csv")
    assert set(REQUIRED) <= set(csv.columns) and list(csv["setting"]) == [s.name for s in settings[:-1]]
    assert csv.loc[0, "compression_ratio"] == 1.0 and csv.loc[0, "accuracy_delta"] == 0.0
    for _, r in frame.iterrows():
        assert r["compression_ratio"] == pytest.approx(frame.loc[0, "artifact_mb"] / r["artifact_mb"])
        assert r["p99_ms"] >= r["p50_ms"] > 0 and r["latency_source"] == "measured"
    assert frame.loc[2, "artifact_mb"] < frame.loc[1, "artifact_mb"]  # 4-bit really is smaller
    assert frame.loc[4, "weight_sparsity"] == pytest.approx(0.5, abs=0.01)  # measured before quantization
    assert math.isnan(frame.loc[1, "logit_mse_vs_reference"]) and frame.loc[2, "logit_mse_vs_reference"] > 0
    preds = pd.read_csv(tmp_path / "out" / "techniques-tiny-predictions.csv")
    assert list(preds.columns) == ["label"] + [s.name for s in settings[:-1]] and len(preds) == len(prepared.val)
    for _, r in frame.iterrows():  # the saved predictions are the ones the accuracy was measured from
        assert (preds[r["setting"]] == preds["label"]).mean() == pytest.approx(r["accuracy"])
    md = (tmp_path / "out" / "techniques-tiny.md").read_text()
    assert all(f"| {s.name} |" in md for s in settings[:-1])
    assert "## Failed settings (not measured)\n\n- broken: CandidateError: heads=2" in md  # the rest still measured
    smaller = frame.loc[2, "artifact_mb"] < frame.loc[0, "artifact_mb"] and \
        frame.loc[2, "accuracy"] - frame.loc[0, "accuracy"] >= -0.0012
    assert f"| smaller | {'yes' if smaller else '**no**'} |" in md
    (tmp_path / "out" / "techniques-tiny-predictions.csv").unlink()  # rerender recomputes from the saved artifacts
    techniques.rerender(tmp_path / "out", settings, comparisons, prepared.val, 1, log=lambda s: None, task="tiny")
    # failures are known only to the run that had them; the header (date, threads, load) is each run's own
    measured_part = summary.body(md).split("\n## Failed settings")[0]
    assert summary.body((tmp_path / "out" / "techniques-tiny.md").read_text()) == measured_part
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "techniques-tiny-predictions.csv"), preds)


def _frame(rows):
    base = {"artifact_mb": 10.0, "logit_mse_vs_reference": math.nan, "median_logit_mse_vs_reference": math.nan,
            "reference": None, "compression_ratio": 1.0, "accuracy_delta": 0.0}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_judge_breaks_accuracy_ties_by_fidelity_and_says_no_when_a_claim_fails():
    frame = _frame([
        {"setting": "rtn", "accuracy": 0.98, "median_logit_mse_vs_reference": 2e-4, "logit_mse_vs_reference": 1e-3,
         "reference": "fp"},
        {"setting": "gptq", "accuracy": 0.98, "median_logit_mse_vs_reference": 1e-4, "logit_mse_vs_reference": 2e-3,
         "reference": "fp"},  # the median decides a tie, however the mean falls
        {"setting": "worse", "accuracy": 0.97, "median_logit_mse_vs_reference": 1e-5, "logit_mse_vs_reference": 1e-5,
         "reference": "fp"},
        {"setting": "big", "accuracy": 0.98, "artifact_mb": 100.0},
        {"setting": "small-lossy", "accuracy": 0.975, "artifact_mb": 4.0, "compression_ratio": 25.0,
         "accuracy_delta": -0.005},
    ])
    v = techniques.judge(frame, [Comparison("tie", "rtn", "gptq", "accuracy"),
                                 Comparison("acc first", "rtn", "worse", "accuracy"),
                                 Comparison("mem ok", "big", "rtn", "memory"),
                                 Comparison("mem lossy", "big", "small-lossy", "memory"),
                                 Comparison("missing", "rtn", "nope", "accuracy")])
    assert [(x["claim"], x["holds"]) for x in v] == [
        ("tie", True), ("acc first", False), ("mem ok", True), ("mem lossy", False),
        (">= 20x smaller than the fp32 teacher at <= 1 pt lost", True)]
    assert "25.0x" in v[-1]["evidence"]


def test_mcnemar_exact_p_values():
    right = np.array([True] * 10)
    p, b, c = techniques.mcnemar_p(right, right)
    assert (p, b, c) == (1.0, 0, 0)
    base = np.array([True, False, False, False] + [True] * 6)
    chal = np.array([False, True, True, True] + [True] * 6)
    assert techniques.mcnemar_p(base, chal) == (pytest.approx(2 * (1 + 4) / 16), 1, 3)
    p, b, c = techniques.mcnemar_p(np.zeros(10, bool), np.ones(10, bool))
    assert (b, c) == (0, 10) and p == pytest.approx(2 / 1024)


def test_judge_treats_a_non_significant_accuracy_gap_as_a_tie_and_lets_fidelity_decide():
    frame = _frame([
        {"setting": "rtn", "accuracy": 0.9, "median_logit_mse_vs_reference": 2e-4, "logit_mse_vs_reference": 1e-3,
         "reference": "fp"},
        {"setting": "gptq", "accuracy": 0.8, "median_logit_mse_vs_reference": 1e-4, "logit_mse_vs_reference": 1e-3,
         "reference": "fp"},
        {"setting": "random", "accuracy": 0.0},
    ])
    labels = np.ones(10, int)
    preds = pd.DataFrame({"label": labels, "rtn": [1] * 9 + [0], "gptq": [1] * 8 + [0, 0], "random": [0] * 10})
    v = techniques.judge(frame, [Comparison("one example", "rtn", "gptq", "accuracy"),
                                 Comparison("ten examples", "rtn", "random", "accuracy")], preds)
    assert v[0]["holds"] and "a tie, so fidelity decides" in v[0]["evidence"] and "p = 1" in v[0]["evidence"]
    assert not v[1]["holds"] and "McNemar p = 0.0039" in v[1]["evidence"]  # 9 vs 0 discordant: real


def test_training_section_trains_one_student_equal_steps_on_each_text(tmp_path):
    """The training section on the tiny task with unlabelled text: each row distils the same student for the same
    steps on another text (the labelled rows, + unlabelled, + augmentation), the second rung at most as many;
    held-out rows never train; the size goal is not judged; the files are named by section and task."""
    from search.flows.text_classification.pipeline import make_context
    from search.target import load_target
    from search.tasks import load_task
    from search.tasks.teacher import prepare

    task_yaml = write_tiny_task(tmp_path / "task")
    (tmp_path / "task" / "more.txt").write_text("\n".join(f"good great movie {i}" if i % 2 else
                                                          f"awful worst movie {i}" for i in range(9000, 9060)) + "\n")
    task_yaml.write_text(task_yaml.read_text().replace("  label_column: y\n",
                                                       "  label_column: y\n  unlabelled: more.txt\n"))
    (tmp_path / "target.yaml").write_text(TARGET)
    prepared = prepare(load_task(str(task_yaml)), tmp_path / "cache", log=lambda s: None).with_holdout()
    ctx = make_context(prepared, load_target(str(tmp_path / "target.yaml")), tmp_path / "cache", 1)
    contexts = {d: techniques.variant(ctx, d, log=lambda s: None) for d in techniques.DATA}
    sizes = {d: len(c.prepared.kd_train) for d, c in contexts.items()}
    n_labelled = len(prepared.train) - len(prepared.holdout)
    assert sizes == {"labelled": n_labelled, "task": n_labelled + 60, "augmented": sizes["augmented"]}
    assert sizes["augmented"] > n_labelled  # copies of the labelled rows (none of a held-out row: test_augmentation)
    settings, comparisons = techniques.training_settings(sizes, steps=12, student=DistillParams(1, 32, 1, 64))

    techniques.run(ctx, tmp_path / "out", settings, comparisons, log=lambda s: None, section="training",
                   contexts=contexts)
    csv = pd.read_csv(tmp_path / "out" / "techniques-training-tiny.csv")
    students = csv[csv["setting"] != "teacher fp32"].set_index("setting")
    assert len(students) == 4
    assert students["distill_examples"].to_dict() == {
        s.name: sizes[s.data] for s in settings if s.candidate is not None}
    rung = students.index[students.index.str.contains("second rung")][0]
    fixed = students.drop(index=rung)["distill_steps"]
    assert (fixed == 12).all() and 6 < students.loc[rung, "distill_steps"] <= 12
    assert (students["distill_s"] > 0).all()
    md = summary.body((tmp_path / "out" / "techniques-training-tiny.md").read_text())  # after the header
    assert md.startswith("# Training a student better, at equal training steps (tiny)")
    assert "beats the labelled rows alone" in md and "20x smaller" not in md
    assert not (tmp_path / "out" / "techniques.csv").exists()  # the compression section's files are another's


def test_output_stems_keep_sections_tasks_and_seeds_apart():
    assert techniques.output_stem(0) == "techniques"
    assert techniques.output_stem(1) == "techniques-seed1"
    assert techniques.output_stem(0, "training", "rotten_tomatoes") == "techniques-training-rotten_tomatoes"
    assert techniques.output_stem(2, "compression", "rt") == "techniques-rt-seed2"


def test_the_training_sections_student_follows_the_teacher():
    from search.families.base import ModelShape

    minilm = ModelShape("bert_cls", 6, 384, (12,) * 6, (1536,) * 6, 30522, 32)
    assert techniques.training_student(minilm) == DistillParams(3, 384, 12, 768, temperature=2.0, alpha=1.0,
                                                                vocab="task")
    tiny = ModelShape("bert_cls", 1, 64, (2,), (128,), 100, 32)
    assert techniques.training_student(tiny) == DistillParams(1, 64, 2, 64, temperature=2.0, alpha=1.0, vocab="task")

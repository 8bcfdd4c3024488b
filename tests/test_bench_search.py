"""`bench search`: strategies compared at equal wall-clock, hypervolume against the union of every run."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from conftest import TINY_DISTILL, write_tiny_task
from search.bench import search as bench

SPACE = TINY_DISTILL + """  alpha: 0.5
  epochs: 1
prune: {type: [none], ratio: 0.0, recovery_steps: 0}
quant: {bits: [32, 8], group_size: [32], activations: [dynamic_int8]}
"""
BUDGET = {"memory_mb": 10, "p99_latency_ms": 1.0, "quality": "accuracy", "accuracy_floor": 0.9,
          "accuracy_floor_rule": "teacher - 0.05"}


def _row(trial, t_s, acc, p99, mem):
    return {"trial": trial, "t_s": t_s, "metrics": {"accuracy": acc, "p99_latency_ms": p99, "memory_mb": mem}}


def test_reference_front_is_the_union_and_times_are_read_off_the_timeline():
    ours = [_row(0, 10, 0.95, 0.5, 5), _row(1, 40, 0.97, 0.4, 4)]
    rnd = [_row(0, 10, 0.80, 0.5, 5), _row(1, 50, 0.95, 0.5, 5), _row(2, 90, 0.97, 0.4, 4), _row(3, 95, 0.99, 2, 4)]
    runs = [{"task": "t", "strategy": "search", "seed": 0, "rows": ours, "budget": BUDGET, "asks": 2},
            {"task": "t", "strategy": "random", "seed": 0, "rows": rnd, "budget": BUDGET, "asks": 4}]
    per_trial, per_run = bench.summarize(runs)
    ref = per_trial["reference_hypervolume"].iloc[0]
    assert ref > 0 and per_trial.groupby("strategy")["hypervolume"].max().max() == pytest.approx(ref)
    by = per_run.set_index("strategy")
    assert by.loc["search", "t_95pct_s"] == 40 and by.loc["random", "t_95pct_s"] == 90
    assert by.loc["search", "t_first_feasible_s"] == 10 and by.loc["random", "t_first_feasible_s"] == 50
    assert by.loc["random", "asks_per_completed"] == 1.0 and by.loc["random", "distinct_models"] == 4
    thirds = bench.summarize(runs, minutes=3)[1].set_index("strategy")["share_at_third"]  # within 60 s
    assert thirds["search"] == pytest.approx(1.0) and 0 < thirds["random"] < 1
    same = [{**r, "model": "L1 h64 int8"} for r in ours]  # two completed trials that built one model
    assert bench.summarize([{**runs[0], "rows": same}])[1]["distinct_models"].tolist() == [1]
    (line,) = bench.verdict(per_run, minutes=2)
    assert "40 s vs random 90 s: FAIL" in line  # 40 x 3 > 90: not within a third of random's time
    assert line.endswith("first budget-meeting candidate first: PASS")
    per_run.loc[per_run.strategy == "random", "t_95pct_s"] = None  # random never got there: the full budget
    assert "vs random >= 120 s: PASS" in bench.verdict(per_run, minutes=2)[0]
    # the same task on another target is another budget box: its own reference, its own verdict
    tight = {**BUDGET, "memory_mb": 4.5}
    other = [{**r, "target": "tight", "budget": tight} for r in runs]
    per_trial, per_run = bench.summarize([{**r, "target": "loose"} for r in runs] + other)
    refs = per_trial.groupby("target")["reference_hypervolume"].first()
    assert refs["tight"] < refs["loose"] and len(bench.verdict(per_run, minutes=2)) == 2


def test_resolution_says_what_one_validation_example_weighs_against_the_reference():
    rows = [{**_row(0, 10, 0.95, 0.5, 5), "eval_examples": 100}]  # 0.05 over the floor; one example is 0.01
    runs = [{"task": "t", "target": "x", "strategy": "search", "seed": 0, "rows": rows, "budget": BUDGET, "asks": 1}]
    (line,) = bench.resolution(runs)
    assert "0.0100 of accuracy (100 examples)" in line and line.endswith("is 0.800 of it")  # 0.04 / 0.05
    big = [{**rows[0], "eval_examples": 100_000}]
    assert bench.resolution([{**runs[0], "rows": big}])[0].endswith("is 1.000 of it")
    lm = {**BUDGET, "quality": "top1_agreement", "top1_agreement_floor": 0.9}  # not a count of examples: no line
    lm_rows = [{**rows[0], "metrics": {**rows[0]["metrics"], "top1_agreement": 0.95}}]
    assert bench.resolution([{**runs[0], "rows": lm_rows, "budget": lm}]) == []


def test_the_timeline_stops_at_the_runs_minutes():
    """`run --timeout-min` stops starting trials; the one in flight finishes and must not count."""
    from datetime import datetime, timedelta

    from optuna.distributions import FloatDistribution
    from optuna.trial import FrozenTrial, TrialState

    t0 = datetime(2026, 12, 2, 12, 0, 0)
    metrics = {"accuracy": 0.95, "p99_latency_ms": 0.5, "memory_mb": 5}

    def trial(number, start_s, end_s, state=TrialState.COMPLETE):
        return FrozenTrial(number=number, state=state, value=None, values=[0.95, 0.5, 5] if end_s else None,
                           datetime_start=None if start_s is None else t0 + timedelta(seconds=start_s),
                           datetime_complete=None if end_s is None else t0 + timedelta(seconds=end_s),
                           params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                           user_attrs=metrics, system_attrs={}, intermediate_values={}, trial_id=number)

    trials = [trial(0, 0, 30), trial(1, 31, 50, TrialState.PRUNED), trial(2, 51, 70), trial(3, 71, 130),
              trial(4, 131, 140), trial(5, None, None, TrialState.WAITING)]
    rows, asks = bench._within(trials, BUDGET, budget_s=100)
    # trial 3 started in time but finished after 100 s; trial 4 was asked for after the budget
    assert [r["trial"] for r in rows] == [0, 2] and [r["t_s"] for r in rows] == [30, 70] and asks == 4
    rows, asks = bench._within(trials, BUDGET, budget_s=None)  # no budget: everything that happened
    assert [r["trial"] for r in rows] == [0, 2, 3, 4] and asks == 5
    assert rows[0]["metrics"] == metrics


@pytest.mark.slow  # three real tiny runs (~50 s): .ci/run runs it with the slow checks, keeping make test < 10 min
def test_bench_search_runs_each_strategy_in_its_own_folder(tmp_path):
    task = write_tiny_task(tmp_path / "task")
    (tmp_path / "space.yaml").write_text(SPACE)
    target = tmp_path / "t.yaml"
    target.write_text("""name: tiny_t
device: {latency: estimated, memory_mb: 4096, memory_bandwidth_gbps: 8, peak_tops: {fp32: 0.2, int8: 0.8}}
workload: {batch_size: 1, sequence_length: 16}
budget: {memory_mb: 0.2, p99_latency_ms: 5, accuracy_floor: {max_drop: 0.5}}
""")
    out = tmp_path / "results" / "bench"
    per_run = bench.run([str(task)], str(target), [0], 0.25, 1, out, tmp_path / "results",
                        strategies=("search", "random"), space=str(tmp_path / "space.yaml"), log=lambda s: None)
    assert set(per_run["strategy"]) == {"search", "random"} and (per_run["completed"] >= 1).all()
    for strategy in ("search", "random"):
        (config,) = (out / "search-runs").glob("t-*-0.25min-1t-space")  # the target's name, its contents' digest
        run = config / f"task-{strategy}-s0" / "run"
        assert json.loads((run.parent / "run" / "run.json").read_text())["strategy"] == strategy
        students = list((run.parent / "cache").glob("student-*.safetensors"))
        assert students  # each run trained its own students
    frame = pd.read_csv(out / "search-task.csv")  # a bench of another task than the default one: its own files
    assert set(frame["strategy"]) == {"search", "random"} and (out / "search-task.html").is_file()
    assert "## Criterion" in (out / "search-task.md").read_text()


@pytest.mark.parametrize("argv, words", [
    (["--tasks", "default", "tasks/rotten_tomatoes.yaml", "--targets", "jetson_orin", "raspberry_pi5", "local_cpu"],
     "--targets: got 3 for 2 task(s)"),
    (["--target", "jetson_orin", "--targets", "jetson_orin"], "--target and --targets: give one of them"),
    (["--targets", "no_such_device"], "no_such_device: -: no such target file"),
    (["--targets", "local_cpu", "--what-bench", "latency"], "--targets: only `bench search` takes a target per task"),
])
def test_bench_search_targets_are_checked_before_any_run(argv, words, tmp_path):
    import subprocess
    import sys

    what = argv[argv.index("--what-bench") + 1] if "--what-bench" in argv else "search"
    argv = argv[:argv.index("--what-bench")] if "--what-bench" in argv else argv
    proc = subprocess.run([sys.executable, "-m", "search", "bench", what, *argv], capture_output=True, text=True,
                          env={**os.environ, "SEARCH_RESULTS_DIR": str(tmp_path)}, timeout=120)
    assert proc.returncode == 2 and words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing was started

"""The second rung (rungs.py): who is promoted, early stopping on held-out training rows, the holdout itself, and a
tiny run in which a promoted trial records both rungs."""
from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
import torch

from conftest import TINY_ESTIMATED_DEVICE, TINY_DISTILL, random_split, run_search, tiny_model, write_tiny_task
from search import rungs
from search.run_dir import RunDir
from search.rungs import Promotion
from search.train import KD, EarlyStopping, train

BUDGET = {"accuracy_floor": 0.80, "p99_latency_ms": 10.0, "memory_mb": 50.0}
ON = Promotion(epochs=2, within=0.05)


def metrics(accuracy, latency=5.0, memory=20.0, **extra):
    return {"accuracy": accuracy, "p99_latency_ms": latency, "memory_mb": memory, **extra}


def test_a_trial_within_reach_of_the_floor_is_promoted():
    up, why = rungs.promotion(metrics(0.77), False, BUDGET, [], ON)
    assert up and "within 0.05 of the floor" in why


def test_a_trial_outside_a_resource_budget_or_already_vouched_for_stays():
    up, why = rungs.promotion(metrics(0.79, latency=12.0), False, BUDGET, [], ON)
    assert not up and "p99_latency_ms" in why
    # the latency *bound* decides, as it does for shipping
    up, why = rungs.promotion(metrics(0.79, p99_latency_ms_upper=11.0), False, BUDGET, [], ON)
    assert not up and "p99_latency_ms" in why
    up, why = rungs.promotion(metrics(0.85), True, BUDGET, [], ON)
    assert not up and "already vouched" in why
    assert rungs.promotion(metrics(0.79), False, BUDGET, [], Promotion())[0] is False  # no promote section


def test_a_trial_that_could_not_join_the_front_at_the_floor_stays():
    shippable = metrics(0.82, latency=4.0, memory=10.0)
    up, why = rungs.promotion(metrics(0.79, latency=5.0, memory=20.0), False, BUDGET, [shippable], ON)
    assert not up and "could not join the front" in why
    # smaller than every shippable trial: at the floor it would join the front
    assert rungs.promotion(metrics(0.79, latency=5.0, memory=5.0), False, BUDGET, [shippable], ON)[0]
    assert rungs.promotion(metrics(0.79), False, BUDGET, [metrics(0.79, latency=1.0, memory=1.0)], ON)[0]


def test_a_bracket_of_the_warm_start_is_promoted_however_far_below():
    up, why = rungs.promotion(metrics(0.60), False, BUDGET, [], ON, bracket="the largest student the budget admits")
    assert up and "largest student the budget admits" in why and "0.2 below the floor" in why
    up, why = rungs.promotion(metrics(0.81), False, BUDGET, [], ON, bracket="x")  # above the floor, bound below it
    assert up and "at or above the floor, not yet vouched for" in why
    assert not rungs.promotion(metrics(0.60), False, BUDGET, [], ON)[0]  # the same trial, no bracket
    assert not rungs.promotion(metrics(0.60, memory=60.0), False, BUDGET, [], ON, bracket="x")[0]  # over budget
    assert not rungs.promotion(metrics(0.85), True, BUDGET, [], ON, bracket="x")[0]  # already vouched for


def test_far_below_the_floor_only_the_best_within_the_resource_budgets_is_promoted():
    earlier = [metrics(0.60), metrics(0.70, latency=50.0),  # the second is outside the latency budget: no rival
               metrics(0.78, rung0_accuracy=0.62)]  # a promoted trial is compared at its first rung
    up, why = rungs.promotion(metrics(0.65), False, BUDGET, earlier, ON)
    assert not up and "once 4 trials" in why  # two rivals: "the best so far" means nothing yet
    earlier += [metrics(0.55), metrics(0.58)]
    up, why = rungs.promotion(metrics(0.65), False, BUDGET, earlier, ON)
    assert up and "best first-rung accuracy" in why and "of 5" in why
    up, why = rungs.promotion(metrics(0.61), False, BUDGET, earlier, ON)
    assert not up and "not the best" in why


def test_language_model_objectives_use_their_own_direction():
    budget = {"quality": "kld_mean", "latency": "tpot_p99_ms", "kld_ceiling": 0.10, "tpot_p99_ms": 50.0,
              "memory_mb": 500.0}
    m = {"kld_mean": 0.12, "tpot_p99_ms": 20.0, "memory_mb": 100.0}
    assert rungs.promotion(m, False, budget, [], Promotion(epochs=1, within=0.05))[0]
    assert not rungs.promotion({**m, "kld_mean": 0.3}, False, budget, [{**m, "kld_mean": 0.2}],
                               Promotion(epochs=1, within=0.05))[0]


def test_early_stopping_keeps_the_best_weights_and_says_where_it_stopped():
    torch.manual_seed(0)
    model = tiny_model(labels=2)
    data = random_split(n=96, seed=1)
    targets = torch.zeros(len(data), 2)
    targets[:, 0] = 8.0  # training pushes every example to class 0 ...
    holdout = random_split(n=32, seed=2)
    opposite = torch.zeros(len(holdout), 2)
    opposite[:, 1] = 8.0  # ... which the held-out rows' teacher outputs contradict: their loss only rises
    kd = KD(targets, temperature=1.0, alpha=1.0)
    early = EarlyStopping(holdout, opposite, kd, every_steps=3, patience=2)
    steps = 30
    train(model, data, steps=steps, kd=kd, lr=1e-3, early=early)
    record = early.record(steps)
    assert record["stopped_early"] and record["steps_run"] < steps
    # the weights it started from were the best (checked before the first step); two worse checks stop it
    assert record["best_step"] == 0 and record["steps_run"] == 6
    assert [s for s, _ in early.checks] == [0, 3, 6]
    assert early.loss(model) == pytest.approx(record["holdout_loss_best"], rel=1e-5)  # the best weights came back


def test_early_stopping_runs_every_step_when_the_holdout_keeps_improving():
    torch.manual_seed(0)
    model = tiny_model(labels=2)
    data = random_split(n=64, seed=1)
    targets = torch.zeros(len(data), 2)
    targets[:, 0] = 4.0
    holdout = random_split(n=16, seed=2)
    agree = torch.zeros(len(holdout), 2)
    agree[:, 0] = 4.0
    kd = KD(targets, temperature=1.0, alpha=1.0)
    early = EarlyStopping(holdout, agree, kd, every_steps=4, patience=1)
    train(model, data, steps=12, kd=kd, lr=1e-3, early=early)
    record = early.record(12)
    assert not record["stopped_early"] and record["steps_run"] == 12 and record["best_step"] == 12


def test_holdout_is_the_training_split_tail_and_no_student_trains_on_it(tmp_path):
    from search.tasks import load_task
    from search.tasks.teacher import HOLDOUT_FRACTION, prepare

    task = write_tiny_task(tmp_path / "task")
    extra = tmp_path / "task" / "more.txt"
    extra.write_text("\n".join(f"good great film {i}" for i in range(20)))
    task.write_text(task.read_text().replace("  validation_fraction: 0.25\n", "  validation_fraction: 0.25\n"
                                                                             "  unlabelled: more.txt\n"))
    p = prepare(load_task(str(task)), tmp_path / "cache", log=lambda *_: None)
    h = p.with_holdout()
    n = len(p.train)
    assert len(h.holdout) == int(n * HOLDOUT_FRACTION)
    assert h.holdout.texts == p.train.texts[n - len(h.holdout):]
    assert not set(h.holdout.texts) & set(h.kd_train.texts)  # never trained on
    assert not set(h.holdout.texts) & set(p.val.texts)  # never validation
    assert len(h.kd_train) == len(p.kd_train) - len(h.holdout)  # the teacher-labelled text stays in
    assert torch.equal(h.holdout_outputs, p.teacher_train_outputs[n - len(h.holdout):])
    assert h.key != p.key and h.with_holdout() is h


SPACE = TINY_DISTILL + """  alpha: 0.5
  epochs: 1
prune:
  type: none
  ratio: 0.5
  recovery_steps: 0
quant:
  bits: [32, 8]
  group_size: [32]
  activations: [dynamic_int8]
promote: {epochs: 2, within: 1.0, patience: 1}
"""
TARGET = TINY_ESTIMATED_DEVICE + """budget:
  memory_mb: 50
  p99_latency_ms: 100
  accuracy_floor: {absolute: 1.0}
"""


def test_a_run_promotes_and_records_both_rungs(tmp_path):
    # a floor of 1.0: no bound reaches it, nothing can be vouched for, everything within `within`: every trial is promoted
    task = write_tiny_task(tmp_path / "task")
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "target.yaml").write_text(TARGET)
    proc = run_search(tmp_path / "results", "run", "--target", str(tmp_path / "target.yaml"), "--space",
                      str(tmp_path / "space.yaml"), "--task", str(task), "--trials", "2", "--run-id", "r",
                      "--threads", "1")
    assert proc.returncode == 3, proc.stderr[-3000:]  # the floor cannot be met: nothing ships
    assert "held out for early stopping" in proc.stdout and "more epoch(s)" in proc.stdout
    run = tmp_path / "results" / "r"
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{run / 'study.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2
    for t in done:
        a = t.user_attrs
        assert a["rung"] == 1 and a["rung_reason"].startswith("promoted")
        assert "rung0_accuracy" in a and a["accuracy"] == t.values[0]
        record = a["rung1_training"]
        assert record["steps_planned"] >= record["steps_run"] >= 1 and record["holdout_examples"] > 0
    rd = RunDir(run)
    labels = np.load(rd.labels)
    for t in done:  # the files on disk are the second rung's (swapped in whole): its predictions give its accuracy
        assert float(np.mean(np.load(rd.predictions(t.number)) == labels)) == pytest.approx(t.user_attrs["accuracy"])
        assert rd.artifact(t.number).is_file() and t.user_attrs["artifact"] == str(rd.artifact(t.number))
    assert not list((run / "trials").glob(".*"))  # no scratch folder left behind
    cached = sorted(p.name for p in (tmp_path / "results" / "cache").glob("student-*-more2-p1.safetensors"))
    assert cached  # the second rung's students are cached apart from the first's
    selected = json.loads((run / "selected.json").read_text())
    assert selected["meets_budget"] is False
    training = selected["training"]  # what the closest candidate's training was
    assert training["rung"] == 1 and "rung0_accuracy" in training and training["distill_examples"] > 0
    trials = (run / "trials.csv").read_text()
    assert "rung_reason" in trials.splitlines()[0]

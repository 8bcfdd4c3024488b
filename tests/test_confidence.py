"""Confidence-bounded shipping: the bounds themselves, and selection that passes over what they cannot vouch for."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search import confidence, pareto

BUDGET = {"memory_mb": 16, "p99_latency_ms": 1.0, "quality": "accuracy", "accuracy_floor": 0.95,
          "accuracy_floor_rule": "teacher - 0.015", "confidence": 0.95}


def test_exact_binomial_bound_matches_the_clopper_pearson_table():
    # 95 of 100 correct: the one-sided 95% Clopper-Pearson lower limit is 0.8977 (any binomial table)
    low, method = confidence.accuracy_lower(np.zeros(100), np.r_[np.zeros(95), np.ones(5)], 0.95)
    assert low == pytest.approx(0.8977, abs=1e-4) and "Clopper-Pearson" in method


def test_paired_bound_uses_only_the_examples_where_student_and_teacher_disagree():
    labels = np.zeros(1000, int)
    teacher = np.zeros(1000, int)
    teacher[:10] = 1  # the teacher misses 10
    same_mistakes = teacher.copy()
    # identical predictions: no evidence of any difference, the bound is the teacher's accuracy
    low, _ = confidence.accuracy_lower(same_mistakes, labels, 0.95, teacher, 0.99)
    assert low == pytest.approx(0.99)
    worse = teacher.copy()
    worse[10:20] = 1  # 10 more mistakes, 0 wins: lower bound on the difference = (2 * 0 - 1) * 10 / 1000
    low, _ = confidence.accuracy_lower(worse, labels, 0.95, teacher, 0.99)
    assert low == pytest.approx(0.99 - 0.01)
    # the paired bound is tighter than comparing two independent binomials would be
    assert low > confidence.accuracy_lower(worse, labels, 0.95)[0] - 0.0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 50), st.integers(0, 50), st.integers(100, 2000), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_paired_lower_bound_never_exceeds_the_observed_difference(wins, losses, n, level):
    s = np.ones(n, bool)
    t = np.ones(n, bool)
    s[:losses] = False  # student wrong, teacher right
    t[losses:losses + wins] = False  # teacher wrong, student right
    low = confidence.paired_difference_lower(s, t, level)
    assert low <= (wins - losses) / n + 1e-12
    assert low >= -(wins + losses) / n - 1e-12


def test_p99_bound_is_above_the_p99_and_grows_with_confidence():
    x = np.random.default_rng(0).gamma(5, 0.1, 500)
    p99 = np.percentile(x, 99)
    b80, b95 = confidence.p99_upper(x, 0.8), confidence.p99_upper(x, 0.95)
    assert p99 <= b80 <= b95 <= x.max()


def _row(trial, acc, p99, upper, mem=5.0):
    return {"trial": trial, "params": {}, "metrics": {"accuracy": acc, "p99_latency_ms": p99, "memory_mb": mem,
                                                      "p99_latency_ms_upper": upper,
                                                      "latency_bound_method": "test"}}


def _evidence(wins: int, losses: int, n=1000):
    """The teacher misses 10 examples; the student gets `wins` of those right and misses `losses` others."""
    labels = np.zeros(n, int)
    teacher = np.zeros(n, int)
    teacher[:10] = 1
    student = teacher.copy()
    student[:wins] = 0
    student[10:10 + losses] = 1
    return {"labels": labels, "predictions": student, "teacher_predictions": teacher}


def test_a_point_estimate_over_the_floor_whose_bound_is_not_is_passed_over():
    teacher = {"accuracy": 0.99}
    b = {**BUDGET, "accuracy_floor": 0.99 - 0.015}
    # trial 1: 0.976 (5 wins, 19 losses against the teacher) is over the 0.975 floor by a hair, and the fastest;
    # trial 2: 0.990 (no disagreement) is slower but vouched for
    evidence = {1: _evidence(5, 19), 2: _evidence(0, 0)}
    rows = [_row(1, 0.976, 0.3, 0.4), _row(2, 0.990, 0.5, 0.6)]

    def vouch(r):
        return confidence.problems(confidence.bounds(r["metrics"], teacher, b, evidence[r["trial"]]), b)

    assert vouch(rows[1]) == []
    problems = vouch(rows[0])
    assert len(problems) == 1 and problems[0].startswith("accuracy lower bound") and "paired" in problems[0]
    choice = pareto.select(rows, b, "latency", vouch)
    assert choice["meets_budget"] and choice["selected"]["trial"] == 2
    assert any("trial 1 ranks higher" in w and "passed over" in w for w in choice["why"])
    # on point estimates alone, trial 1 would have shipped
    assert pareto.select(rows, b, "latency")["selected"]["trial"] == 1


def test_nothing_ships_when_no_candidate_can_be_vouched_for():
    teacher = {"accuracy": 0.995}
    b = {**BUDGET, "accuracy_floor": 0.98}
    rows = [_row(1, 0.99, 0.5, 1.3)]  # latency upper bound over the 1 ms budget

    def vouch(r):
        return confidence.problems(confidence.bounds(r["metrics"], teacher, b, _evidence(0, 0)), b)

    choice = pareto.select(rows, b, "accuracy", vouch)
    assert not choice["meets_budget"]
    assert "none at 95% confidence" in choice["why"][0] and "p99_latency_ms upper bound 1.3" in choice["why"][1]


def test_a_trial_without_stored_evidence_is_not_vouched_for():
    b = confidence.bounds(_row(1, 0.99, 0.5, 0.6)["metrics"], {"accuracy": 0.995}, BUDGET, None)
    assert b["accuracy"]["bound"] is None and not b["accuracy"]["meets"]
    assert "no per-example predictions" in confidence.problems(b, BUDGET)[0]


def test_language_model_quality_bound_from_the_standard_error():
    budget = {"memory_mb": 200, "tpot_p99_ms": 50, "latency": "tpot_p99_ms", "quality": "kld_mean",
              "kld_ceiling": 0.1, "confidence": 0.95}
    m = {"kld_mean": 0.09, "kld_mean_se": 0.01, "tpot_p99_ms": 30, "memory_mb": 150, "tpot_p99_ms_upper": 35,
         "latency_bound_method": "bootstrap"}
    b = confidence.bounds(m, {}, budget)
    assert b["kld_mean"]["bound"] == pytest.approx(0.09 + 1.6449 * 0.01, abs=1e-4)
    assert not b["kld_mean"]["meets"] and b["tpot_p99_ms"]["meets"]


def test_estimated_latency_bound_says_where_its_error_comes_from():
    from search.target import load_target

    t = load_target("jetson_orin")
    upper, how = confidence.latency_bound(0.4, (), "estimated", t.device, 0.95)
    assert upper == pytest.approx(0.4 * (1 + t.device.latency_error_pct / 100)) and "assumed" in how

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


def test_paired_bound_has_a_margin_even_when_the_student_only_loses():
    labels = np.zeros(1000, int)
    teacher = np.zeros(1000, int)
    teacher[:10] = 1  # the teacher misses 10
    # identical predictions: no observed difference, but 1000 examples cannot rule out a small one
    low, method = confidence.accuracy_lower(teacher.copy(), labels, 0.95, teacher, 0.99)
    assert 0.99 - 0.005 < low < 0.99 and "paired" in method
    worse = teacher.copy()
    worse[10:20] = 1  # 10 more mistakes, 0 wins: the bound lies below the observed 0.98, not on it
    low, _ = confidence.accuracy_lower(worse, labels, 0.95, teacher, 0.99)
    assert 0.96 < low < 0.98


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 50), st.integers(0, 50), st.integers(100, 2000), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_paired_lower_bound_is_below_the_observed_difference(wins, losses, n, level):
    s = np.ones(n, bool)
    t = np.ones(n, bool)
    s[:losses] = False  # student wrong, teacher right
    t[losses:losses + wins] = False  # teacher wrong, student right
    low = confidence.paired_difference_lower(s, t, level)
    assert -1 <= low < (wins - losses) / n


def test_paired_bound_covers_the_true_difference_at_its_level():
    """Monte Carlo: students exactly 1.5 points worse than the teacher on 904 examples; a 95% lower bound may
    exceed that true difference in 5% of draws (the conditional McNemar construction missed 11-51%; 0.06 allows
    the simulation's own noise, 0.7 pt over 900 draws)."""
    rng = np.random.default_rng(0)
    n, misses = 904, 0
    for p_win, p_loss in ((0.0, 0.015), (0.005, 0.020), (0.02, 0.035)):
        for _ in range(300):
            u = rng.random(n)
            s = ~((u >= p_win) & (u < p_win + p_loss))  # wrong where only the teacher is right
            t = ~(u < p_win)  # wrong where only the student is right
            misses += confidence.paired_difference_lower(s, t, 0.95) > -0.015
    assert misses / 900 <= 0.06, misses / 900


def test_p99_bound_is_an_order_statistic_and_needs_enough_runs():
    x = np.random.default_rng(0).gamma(5, 0.1, 500)
    upper = confidence.p99_upper(x, 0.95)
    assert np.percentile(x, 99) <= upper <= x.max() and upper in x
    assert confidence.p99_upper(x[:200], 0.95) is None  # 1 - 0.99^200 = 0.87 < 0.95
    assert confidence.runs_needed(0.95) == 299 and confidence.p99_upper(x[:299], 0.95) == x[:299].max()
    bound, method = confidence.measured_latency_bound(x[:200], 0.95)
    assert bound is None and "needs 299" in method


def test_p99_bound_covers_the_true_p99_at_its_level():
    rng = np.random.default_rng(1)
    true_p99 = np.log(100)  # of an exponential(1)
    misses = sum(confidence.p99_upper(rng.exponential(1, 500), 0.95) < true_p99 for _ in range(400))
    assert misses / 400 <= 0.07, misses / 400


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
    b = confidence.bounds(m, {}, budget)  # a run from before errors across windows: the normal quantile
    assert b["kld_mean"]["bound"] == pytest.approx(0.09 + 1.6449 * 0.01, abs=1e-4)
    assert not b["kld_mean"]["meets"] and b["tpot_p99_ms"]["meets"] and "optimistic" in b["kld_mean"]["method"]
    # the error across 8 windows: Student's t with 7 degrees of freedom (1.895), wider than the normal's 1.645
    t8 = confidence.bounds({**m, "kld_mean": 0.07, "se_windows": 8}, {}, budget)["kld_mean"]
    assert t8["bound"] == pytest.approx(0.07 + 1.8946 * 0.01, abs=1e-4) and "8 evaluation windows" in t8["method"]
    assert t8["meets"]


def test_estimated_latency_bound_says_where_its_error_comes_from():
    from search.target import load_target

    t = load_target("jetson_orin")
    upper, how = confidence.latency_bound(0.4, (), "estimated", t.device, 0.95)
    assert upper == pytest.approx(0.4 * (1 + t.device.latency_error_pct / 100)) and "assumed" in how


def test_out_of_reach_names_the_budget_that_would_have_to_move():
    from search import budget_cost

    b = {**BUDGET, "accuracy_floor": 0.97}
    rows = [_row(1, 0.95, 0.5, 0.6, mem=10), _row(2, 0.975, 0.8, 0.9, mem=21.3), _row(3, 0.98, 1.4, 1.5, mem=8)]
    lines = budget_cost.out_of_reach(rows, b, spent_s=600)
    assert lines[0] == "best within the resource budgets: trial 1, accuracy 0.9500 (-2.00 pts from the floor 0.9700)"
    # what a candidate needs is its bound (trial 3: p99 1.4 ms, bound 1.5 ms), as shipping requires
    assert lines[1].startswith("p99_latency_ms would have to move from 1 to 1.50 ms (+0.50), the others held, "
                               "to admit trial 3")
    assert lines[2].startswith("memory_mb would have to move from 16 to 21.30 MB (+5.30)")
    assert lines[3] == "spent on training and measuring: 10.0 min over 3 completed trials"
    assert budget_cost.out_of_reach(rows, b, spent_s=600, promoted=2)[3].endswith(
        "over 3 completed trials, 2 of them trained further (second rung)")

"""Pure selection logic with exact expectations."""
from __future__ import annotations

import pytest

from search import pareto

BUDGET = {"memory_mb": 20.0, "p99_latency_ms": 3.0, "accuracy_floor": 0.95}


def row(trial, acc, p99, mem):
    return {"trial": trial, "params": {}, "metrics": {"accuracy": acc, "p99_latency_ms": p99, "memory_mb": mem}}


def test_front_drops_dominated_points():
    pts = [{"accuracy": 0.9, "p99_latency_ms": 2, "memory_mb": 10},
           {"accuracy": 0.8, "p99_latency_ms": 3, "memory_mb": 12},  # dominated by the first
           {"accuracy": 0.95, "p99_latency_ms": 5, "memory_mb": 10},
           {"accuracy": 0.9, "p99_latency_ms": 2, "memory_mb": 10}]  # equal to the first: both stay
    assert pareto.front(pts) == [pts[0], pts[2], pts[3]]


def test_feasible_and_violations():
    m = {"accuracy": 0.96, "p99_latency_ms": 3.5, "memory_mb": 19.0}
    assert pareto.violations(m, BUDGET) == {"memory_mb": -1.0, "p99_latency_ms": 0.5,
                                            "accuracy": -0.010000000000000009}
    assert not pareto.feasible(m, BUDGET)
    assert pareto.feasible({**m, "p99_latency_ms": 3.0}, BUDGET)  # on the line counts as met


def test_select_most_accurate_feasible_with_tie_break_and_reasons():
    rows = [row(0, 0.99, 5.0, 10), row(1, 0.97, 2.5, 15), row(2, 0.97, 2.0, 18), row(3, 0.96, 1.0, 5)]
    out = pareto.select(rows, BUDGET)
    assert out["meets_budget"] and out["selected"]["trial"] == 2
    why = "\n".join(out["why"])
    assert "policy accuracy: most accurate of 3 candidates that meet every budget (of 4 completed)" in why
    assert "tied with trial(s) 1: broken by lower p99 latency, then lower memory" in why
    assert "tightest resource budget: p99_latency_ms" not in why  # memory margin 10% < latency 33%
    assert "tightest resource budget: memory_mb" in why
    assert "runner-up trial 1: +0.00 pts accuracy, +0.50 ms p99, -3.00 MB" in why


def test_select_when_nothing_fits_names_the_budget_and_closest():
    rows = [row(0, 0.99, 5.0, 10), row(1, 0.97, 3.3, 12)]
    out = pareto.select(rows, BUDGET)
    assert not out["meets_budget"] and out["selected"]["trial"] == 1
    assert "no candidate met p99_latency_ms at all" in out["why"][0] and out["why"][1].startswith("closest: trial 1")


def test_select_empty():
    assert pareto.select([], BUDGET) == {"selected": None, "meets_budget": False, "why": ["no trial completed"]}


def test_other_policies():
    rows = [row(0, 0.99, 5.0, 10), row(1, 0.97, 2.5, 15), row(2, 0.97, 2.0, 18), row(3, 0.96, 1.0, 5)]
    assert pareto.select(rows, BUDGET, "latency")["selected"]["trial"] == 3
    assert pareto.select(rows, BUDGET, "memory")["selected"]["trial"] == 3
    rows = [row(0, 0.99, 2.9, 19), row(1, 0.98, 1.5, 10), row(2, 0.951, 1.0, 5)]
    # scaled: trial 1 sits at (0.5, 0.26, 0.36) from the utopia point; the ends are 1 away on some axis
    assert pareto.select(rows, BUDGET, "knee")["selected"]["trial"] == 1


def test_hypervolume_exact():
    b = {"memory_mb": 10.0, "p99_latency_ms": 4.0, "accuracy_floor": 0.9}
    one = {"accuracy": 0.95, "p99_latency_ms": 2.0, "memory_mb": 5.0}
    assert pareto.hypervolume([one], b) == pytest.approx(0.05 * 2.0 * 5.0)
    two = {"accuracy": 0.92, "p99_latency_ms": 1.0, "memory_mb": 8.0}
    # union of boxes 0.05x2x5 and 0.02x3x2 overlapping in 0.02x2x2
    assert pareto.hypervolume([one, two], b) == pytest.approx(0.5 + 0.12 - 0.08)
    over = {"accuracy": 0.99, "p99_latency_ms": 5.0, "memory_mb": 1.0}  # over the latency budget: ignored
    assert pareto.hypervolume([one, two, over], b) == pytest.approx(0.54)

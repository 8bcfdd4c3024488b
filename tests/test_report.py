"""Dashboard: categorical knobs (incl. numbers mixed with strings) become ticked axes, not NaN; what each budget
buys; log x axes where the teacher sits far from the candidates, with budget labels still on their lines."""
from __future__ import annotations

import math

import pytest

from search.report import _axis, _budget_cost_figure, _log_axis, _vline, front_info


def test_numeric_knob_stays_numeric_and_unsampled_is_blank():
    axis = _axis("prune.ratio", [0.2, None, 0.5])
    assert axis["values"][0] == 0.2 and math.isnan(axis["values"][1]) and "ticktext" not in axis


def test_mixed_group_size_is_categorical_with_one_tick_per_option():
    axis = _axis("quant.group_size", [32, "channel", None, 128, 32])
    assert axis["ticktext"] == ["128", "32", "channel"] and axis["tickvals"] == [0, 1, 2]
    assert axis["values"][:2] == [1, 2] and math.isnan(axis["values"][2]) and axis["values"][3:] == [0, 1]


def rows_of(points: list[tuple[float, float, float]], quality: str = "accuracy",
            latency: str = "p99_latency_ms") -> list[dict]:
    """(quality, latency ms, memory MB) per trial, trial = index."""
    return [{"trial": i, "params": {}, "metrics": {quality: q, latency: ms, "memory_mb": mb, "latency_source": "x"}}
            for i, (q, ms, mb) in enumerate(points)]


def steps(curve: list[dict]) -> list[tuple]:
    return [(s["limit"], s["quality"], s["trial"]) for s in curve]


def test_budget_cost_steps_per_resource_within_the_other_budget():
    budget = {"memory_mb": 16.0, "p99_latency_ms": 1.0, "accuracy_floor": 0.9}
    rows = rows_of([(0.80, 0.3, 3.0), (0.90, 0.5, 6.0),
                    (0.88, 0.6, 8.0),  # worse than a cheaper one in both resources: never a step
                    (0.95, 0.9, 15.0),
                    (0.97, 1.4, 12.0),  # over the latency budget: only on the latency curve
                    (0.99, 0.4, 30.0)])  # over the memory budget: only on the memory curve
    cost = front_info(rows, budget, None, None)["budget_cost"]
    assert set(cost) == {"p99_latency_ms", "memory_mb"}
    assert steps(cost["p99_latency_ms"]) == [(0.3, 0.80, 0), (0.5, 0.90, 1), (0.9, 0.95, 3), (1.4, 0.97, 4)]
    assert steps(cost["memory_mb"]) == [(3.0, 0.80, 0), (6.0, 0.90, 1), (15.0, 0.95, 3), (30.0, 0.99, 5)]


def test_budget_cost_of_a_language_model_minimizes_and_includes_ttft():
    budget = {"quality": "kld_mean", "latency": "tpot_p99_ms", "kld_ceiling": 0.1, "tpot_p99_ms": 40.0,
              "memory_mb": 100.0, "ttft_ms": 500.0}
    rows = rows_of([(0.30, 20.0, 50.0), (0.08, 30.0, 90.0), (0.05, 35.0, 150.0)], "kld_mean", "tpot_p99_ms")
    for r, ttft in zip(rows, (100.0, 200.0, 300.0)):
        r["metrics"]["ttft_ms"] = ttft
    cost = front_info(rows, budget, None, None)["budget_cost"]
    assert set(cost) == {"tpot_p99_ms", "memory_mb", "ttft_ms"}
    assert steps(cost["memory_mb"]) == [(50.0, 0.30, 0), (90.0, 0.08, 1), (150.0, 0.05, 2)]
    assert steps(cost["tpot_p99_ms"]) == [(20.0, 0.30, 0), (30.0, 0.08, 1)]  # trial 2 is over the memory budget
    assert steps(cost["ttft_ms"]) == [(100.0, 0.30, 0), (200.0, 0.08, 1)]


def test_budget_cost_is_empty_when_nothing_meets_the_other_budgets():
    budget = {"memory_mb": 16.0, "p99_latency_ms": 1.0, "accuracy_floor": 0.9}
    cost = front_info(rows_of([(0.95, 2.0, 5.0), (0.97, 3.0, 8.0)]), budget, None, None)["budget_cost"]
    assert cost["memory_mb"] == [] and steps(cost["p99_latency_ms"]) == [(2.0, 0.95, 0), (3.0, 0.97, 1)]


def test_budget_cost_figure_draws_steps_and_says_when_a_resource_has_none():
    budget = {"memory_mb": 16.0, "p99_latency_ms": 1.0, "accuracy_floor": 0.9}
    fig = _budget_cost_figure([("orin", front_info(rows_of([(0.95, 2.0, 5.0), (0.97, 3.0, 8.0)]), budget, None, None))])
    (latency,) = fig.data  # memory has no step: nothing is within 1 ms
    assert latency.line.shape == "hv" and list(latency.y) == [0.95, 0.97, 0.97]
    assert list(latency.x) == pytest.approx([2.0, 3.0, 3.0 * 1.2])  # the last level carried on past the last step
    (empty,) = [a for a in fig.layout.annotations if a.text == "no candidate meets the other budgets"]
    assert (empty.xref, empty.yref) == ("x2 domain", "y2 domain")


def test_log_axis_when_the_teacher_is_far_from_the_candidates():
    candidates_mb, budget_mb, teacher_mb = [3.0, 6.5, 11.0, 15.0], 16.0, 94.0
    assert _log_axis(candidates_mb + [budget_mb, teacher_mb])
    assert not _log_axis(candidates_mb + [budget_mb])  # within a decade a linear axis shows them spread out
    assert _log_axis([0.3, 0.5, 0.9, 1.0, 8.6])  # latency ms
    assert not _log_axis([0.0, 0.5, 8.6]) and not _log_axis([-1.0, 50.0])  # a log axis cannot show these
    assert not _log_axis([])


def test_budget_label_on_a_log_axis_is_in_log10_units_and_the_line_in_data_units():
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[3.0, 94.0], y=[0.9, 0.99]))
    _vline(fig, 16.0, True, annotation_text="budget 16")
    _vline(fig, 16.0, False, annotation_text="budget 16")
    assert [s.x0 for s in fig.layout.shapes] == [16.0, 16.0]
    assert [a.x for a in fig.layout.annotations] == [math.log10(16.0), 16.0]

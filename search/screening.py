"""What a screen's predictions mean for the budget, for every kind of task: a flow's `screen` predicts
`predicted_<objective>` (and `predicted_<objective>_upper` where it bounds it) from the recipe alone; this module
turns those into the study's constraints, once, from the objectives (objectives.py)."""
from __future__ import annotations

from .objectives import MEMORY, constraints


def predicted_violations(predicted: dict, budget: dict) -> dict:
    """By how much a screened-out recipe is predicted to miss each resource budget, keyed by objective name (as the
    constraints of completed trials; quality is unknown before training and claims nothing). A bound, where the
    screen has one, is what must fit (a candidate ships only within it: confidence.py). Memory first, then the
    latency objective and the extra constraints the budget names."""
    out = {}
    resources = sorted(constraints(budget)[1:], key=lambda o: o is not MEMORY)
    for o in resources:
        value = predicted.get(f"predicted_{o.name}_upper", predicted.get(f"predicted_{o.name}"))
        if value is not None and budget.get(o.budget_key) is not None:
            out[o.name] = o.violation(value, budget[o.budget_key])
    return out

"""What a budget costs: the best quality a run found as one resource budget moves and the others stay where they
are. Pure functions over finished trials (rows of {"trial", "metrics"}); select, selected.json and the dashboard
read them from here."""
from __future__ import annotations

from .objectives import Objective, constraints, for_budget


def needed(metrics: dict, resource: Objective) -> float:
    """The budget of this resource a candidate needs to ship: its upper bound where the trial has one (a candidate
    ships only within its bounds: confidence.py), else its point estimate (memory; a latency the search measured
    too few times to bound, which select bounds when it re-measures)."""
    upper = metrics.get(f"{resource.name}_upper")
    return metrics[resource.name] if upper is None else upper


def curve(rows: list[dict], budget: dict, resource: Objective) -> list[dict]:
    """The best quality within every *other* resource budget as a function of this resource's budget: one point
    per step where a larger budget first buys a better candidate, {"limit", "quality", "trial"}, ascending by
    limit (what each candidate needs: `needed`). The quality floor is not applied: the curve shows what a tighter
    budget costs even below it."""
    quality = for_budget(budget)[0]
    others = [o for o in constraints(budget)[1:] if o.name != resource.name]
    pool = [r for r in rows if all(o.violation(needed(r["metrics"], o), budget[o.budget_key]) <= 0 for o in others)]
    steps, best = [], None
    for r in sorted(pool, key=lambda r: (needed(r["metrics"], resource), -quality.sign * r["metrics"][quality.name])):
        q = r["metrics"][quality.name]
        if best is None or quality.better(q, best):
            best = q
            steps.append({"limit": needed(r["metrics"], resource), "quality": q, "trial": r["trial"]})
    return steps


def _quality_delta(quality: Objective, d: float) -> str:
    return f"{d * 100:+.2f} pts" if quality.unit == "fraction" else f"{d:+.4f} {quality.unit}"


def lines(rows: list[dict], budget: dict) -> dict:
    """Per resource budget, one sentence: the best quality at today's budget, how far the budget could shrink
    and keep it, what the next step down costs and what the next step up buys."""
    quality = for_budget(budget)[0]
    out = {}
    for o in constraints(budget)[1:]:
        steps, limit = curve(rows, budget, o), budget[o.budget_key]
        if not steps:
            out[o.name] = f"{o.name}: no candidate meets the other budgets, so no budget of {o.name} alone helps"
            continue
        within = [s for s in steps if s["limit"] <= limit]
        above = [s for s in steps if s["limit"] > limit]
        parts = []
        if within:
            here = within[-1]
            parts.append(f"at {limit:g} {o.unit} the best {quality.name} is {here['quality']:.4f} (trial "
                         f"{here['trial']}, which needs {here['limit']:.2f} {o.unit})")
            if len(within) > 1:
                down = within[-2]
                parts.append(f"below {here['limit']:.2f} {o.unit}: {down['quality']:.4f} "
                             f"({_quality_delta(quality, down['quality'] - here['quality'])}, trial {down['trial']})")
            else:
                parts.append(f"below {here['limit']:.2f} {o.unit} no candidate")
        else:
            parts.append(f"at {limit:g} {o.unit} no candidate meets it")
        if above:
            up, base = above[0], within[-1]["quality"] if within else None
            gain = f" ({_quality_delta(quality, up['quality'] - base)})" if base is not None else ""
            parts.append(f"+{up['limit'] - limit:.2f} {o.unit} (to {up['limit']:.2f}) would buy {up['quality']:.4f}"
                         f"{gain}, trial {up['trial']}")
        else:
            parts.append(f"no candidate found does better with more {o.name}")
        out[o.name] = f"{o.name}: " + "; ".join(parts)
    return out


def summary(rows: list[dict], budget: dict) -> dict:
    """For selected.json: every resource's curve and its sentence."""
    text = lines(rows, budget)
    return {o.name: {"curve": curve(rows, budget, o), "text": text[o.name]} for o in constraints(budget)[1:]}


def out_of_reach(rows: list[dict], budget: dict, spent_s: float | None = None, promoted: int = 0) -> list[str]:
    """When no candidate meets every budget: what the best one within the resource budgets reached, which single
    resource budget would have to move, and by how much, to admit a candidate at the quality limit (from the
    trials run), and the training and measuring time spent."""
    quality = for_budget(budget)[0]
    resources = constraints(budget)[1:]
    limit = budget[quality.budget_key]
    within = [r for r in rows if all(o.violation(needed(r["metrics"], o), budget[o.budget_key]) <= 0
                                     for o in resources)]
    out = []
    if within:
        best = max(within, key=lambda r: quality.sign * r["metrics"][quality.name])
        q = best["metrics"][quality.name]
        out.append(f"best within the resource budgets: trial {best['trial']}, {quality.name} {q:.4f} "
                   f"({_quality_delta(quality, q - limit)} from the {'floor' if quality.sign > 0 else 'ceiling'} "
                   f"{limit:.4f})")
    else:
        out.append("no candidate met the resource budgets at all")
    for o in resources:
        admits = [s for s in curve(rows, budget, o) if quality.violation(s["quality"], limit) <= 0]
        if admits:
            s = admits[0]
            out.append(f"{o.name} would have to move from {budget[o.budget_key]:g} to {s['limit']:.2f} {o.unit} "
                       f"({s['limit'] - budget[o.budget_key]:+.2f}), the others held, to admit trial {s['trial']} at "
                       f"{quality.name} {s['quality']:.4f}")
        else:
            out.append(f"no trial reaches the {quality.name} limit within the other budgets at any {o.name} budget")
    if spent_s is not None:
        out.append(f"spent on training and measuring: {spent_s / 60:.1f} min over {len(rows)} completed trials"
                   + (f", {promoted} of them trained further (second rung)" if promoted else ""))
    return out

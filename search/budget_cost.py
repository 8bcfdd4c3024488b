"""What a budget costs: the best quality a run found as one resource budget moves and the others stay where they
are. Pure functions over finished trials (rows of {"trial", "metrics"}); select, selected.json and the dashboard
read them from here."""
from __future__ import annotations

from .objectives import Objective, constraints, for_budget


def curve(rows: list[dict], budget: dict, resource: Objective) -> list[dict]:
    """The best quality within every *other* resource budget as a function of this resource's budget: one point
    per step where a larger budget first buys a better candidate, {"limit", "quality", "trial"}, ascending by
    limit. The quality floor is not applied: the curve shows what a tighter budget costs even below it."""
    quality = for_budget(budget)[0]
    others = [o for o in constraints(budget)[1:] if o.name != resource.name]
    pool = [r for r in rows if all(o.violation(r["metrics"][o.name], budget[o.budget_key]) <= 0 for o in others)]
    steps, best = [], None
    for r in sorted(pool, key=lambda r: (r["metrics"][resource.name], -quality.sign * r["metrics"][quality.name])):
        q = r["metrics"][quality.name]
        if best is None or quality.better(q, best):
            best = q
            steps.append({"limit": r["metrics"][resource.name], "quality": q, "trial": r["trial"]})
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

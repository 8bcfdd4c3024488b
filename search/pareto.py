"""Pure functions over finished trials: feasibility, the Pareto front, and the deploy choice with reasons."""
from __future__ import annotations

from .confidence import DEFAULT_CONFIDENCE
from .objectives import constraints, for_budget, limits, slice_limits

DEFAULT_OBJECTIVES = for_budget({})  # a classification run's: accuracy up, p99 latency down, memory down


def violations(metrics: dict, budget: dict) -> dict:
    """Amount by which each budget is missed (<= 0 means met), keyed by objective name, then by the quality
    objective on each slice the task names (`accuracy@tweets`)."""
    return {name: o.violation(metrics[name], limit) for name, o, limit in limits(budget)}


def shipping_violations(metrics: dict, budget: dict) -> dict:
    """As `violations`, with each resource at what the candidate needs to ship: its upper bound where the trial
    has one (confidence.py). The study's constraints: the sampler then looks where candidates can be vouched for."""
    bounded = {o.name: metrics[f"{o.name}_upper"] for o in constraints(budget)[1:]
               if metrics.get(f"{o.name}_upper") is not None}
    return violations({**metrics, **bounded}, budget)


def feasible(metrics: dict, budget: dict) -> bool:
    return all(v <= 0 for v in violations(metrics, budget).values())


def dominates(a: dict, b: dict, objectives=DEFAULT_OBJECTIVES) -> bool:
    at_least = all(o.sign * a[o.name] >= o.sign * b[o.name] for o in objectives)
    better = any(o.sign * a[o.name] > o.sign * b[o.name] for o in objectives)
    return at_least and better


def front(rows: list[dict], objectives=DEFAULT_OBJECTIVES) -> list[dict]:
    """Non-dominated rows (each objective in its direction), in input order."""
    return [r for r in rows if not any(dominates(o, r, objectives) for o in rows if o is not r)]


def _margin_text(o, metrics: dict, budget: dict) -> str:
    return _margin(o, o.name, metrics[o.name], budget[o.budget_key])


def _margin(o, name: str, value: float, limit: float) -> str:
    if o.unit == "fraction":  # a quality objective in fraction points (accuracy): say it in points
        kind = "floor" if o.sign > 0 else "ceiling"
        return f"{name} {value:.4f} vs {kind} {limit:.4f} (margin {-o.violation(value, limit) * 100:+.2f} pts)"
    m = -o.violation(value, limit)
    digits = 2 if o.unit in ("ms", "MB") else 4  # KL divergence and ratios need more than two decimals
    return (f"{name} {value:.{digits}f} vs budget {limit:g} {o.unit} "
            f"(margin {m:+.{digits}f} {o.unit}, {100 * m / limit:+.0f}%)")


def binding_slice(values: dict, budget: dict):
    """The slice with the least margin to its limit, from `values` ({slice key: value}: a trial's metrics, or its
    bounds); None where the task names no slices."""
    sliced = slice_limits(budget)
    return min(sliced, key=lambda s: -s.objective.violation(values[s.key], s.limit)) if sliced else None


def slices_text(metrics: dict, budget: dict) -> str | None:
    """One line on the slices: whether each is within its limit, and which binds."""
    s = binding_slice(metrics, budget)
    if s is None:
        return None
    missed = [x.slice for x in slice_limits(budget) if x.objective.violation(metrics[x.key], x.limit) > 0]
    head = (f"slices missing their limit: {', '.join(missed)}" if missed else
            f"every slice within its limit ({len(slice_limits(budget))} slices)")
    return f"{head}; binding slice {s.slice}: {_margin(s.objective, s.key, metrics[s.key], s.limit)}"


def _trade(a: dict, b: dict, objectives) -> str:
    parts = []
    for o in objectives:
        d = b[o.name] - a[o.name]
        parts.append(f"{d * 100:+.2f} pts {o.name}" if o.unit == "fraction" else
                     f"{d:+.{2 if o.unit in ('ms', 'MB') else 4}f} {o.unit}{TRADE_SUFFIX.get(o.name, '')}")
    return ", ".join(parts)


TRADE_SUFFIX = {"p99_latency_ms": " p99", "tpot_p99_ms": " p99 per output token"}
POLICIES = ("accuracy", "latency", "memory", "knee")
THIN_FRONT = 3  # fewer candidates than this on the front within a budget: the front is thin there (replan)  # "accuracy": the best quality objective


def _knee_distance(rows: list[dict], objectives) -> dict:
    """Distance to the utopia point after scaling each objective to [0, 1] over the rows (flat dicts)."""
    span = {}
    for o in objectives:
        vals = [r[o.name] for r in rows]
        span[o.name] = (min(vals), max(vals) - min(vals) or 1.0)
    dist = {}
    for r in rows:
        parts = []
        for o in objectives:
            lo, width = span[o.name]
            x = (r[o.name] - lo) / width
            parts.append((1 - x) if o.sign > 0 else x)  # 0 = best value seen
        dist[r["trial"]] = sum(p * p for p in parts) ** 0.5
    return dist


def _ranking(policy: str, ok: list[dict], objectives):
    """Sort key and the sentence that says what the policy optimises; later keys break ties."""
    quality, latency, memory = objectives
    key = {o.name: (lambda r, o=o: -o.sign * r["metrics"][o.name]) for o in objectives}  # lower sorts first
    q, p99, mem = key[quality.name], key[latency.name], key[memory.name]
    if policy == "accuracy":
        return (lambda r: (q(r), p99(r), mem(r))), "most accurate", "lower p99 latency, then lower memory"
    if policy == "latency":
        return (lambda r: (p99(r), q(r), mem(r))), "lowest p99 latency", "higher accuracy, then lower memory"
    if policy == "memory":
        return (lambda r: (mem(r), q(r), p99(r))), "smallest memory", "higher accuracy, then lower p99 latency"
    if policy == "knee":
        dist = _knee_distance(front([r["metrics"] | {"trial": r["trial"]} for r in ok], objectives), objectives)
        return ((lambda r: (dist.get(r["trial"], float("inf")), q(r))),
                "knee of the front (closest to the best of all three objectives, each scaled to [0, 1])",
                "higher accuracy")
    raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")


def select(rows: list[dict], budget: dict, policy: str = "accuracy", vouch=None) -> dict:
    """Pick the deploy candidate among those within every budget (default: the most accurate).

    rows: {"trial", "params", "metrics"} of completed trials. vouch: row -> reasons it cannot be vouched for at
    the budget's confidence (confidence.py; empty: it can); a candidate whose point estimates meet every budget
    but whose bounds do not is passed over for the next one, or nothing ships. Returns {"selected",
    "meets_budget", "why"}.
    """
    if not rows:
        return {"selected": None, "meets_budget": False, "why": ["no trial completed"]}
    objectives = for_budget(budget)
    limited = constraints(budget)  # the objectives and any budget-only constraint (time to first token)
    quality, resources = objectives[0], limited[1:]
    ok = [r for r in rows if feasible(r["metrics"], budget)]
    if not ok:
        def excess(r):  # shortfall summed over budgets (resources relative, quality in its own units)
            v = violations(r["metrics"], budget)
            return (max(0.0, v[quality.name]) + sum(max(0.0, v[x.key]) for x in slice_limits(budget))
                    + sum(max(0.0, v[o.name]) / budget[o.budget_key] for o in resources))
        closest = min(rows, key=excess)
        missed = {k for r in rows for k, v in violations(r["metrics"], budget).items() if v > 0}
        names = [o.name for o in limited] + [x.key for x in slice_limits(budget)]
        never = [k for k in names if all(violations(r["metrics"], budget)[k] > 0 for r in rows)]
        why = [f"no candidate met every budget; missed: {', '.join(sorted(missed))}"
               + (f"; no candidate met {', '.join(never)} at all" if never else ""),
               f"closest: trial {closest['trial']}: "
               + "; ".join(_margin_text(o, closest["metrics"], budget) for o in limited)]
        why += [line for line in [slices_text(closest["metrics"], budget)] if line]
        return {"selected": closest, "meets_budget": False, "why": why}
    key, goal, tie_rule = _ranking(policy, ok, objectives)
    ranked = sorted(ok, key=key)
    passed_over = []  # (row, reasons) of better-ranked candidates whose bounds miss a budget
    if vouch is not None:
        verdicts = [(r, vouch(r)) for r in ranked]
        vouched = [r for r, reasons in verdicts if not reasons]
        if not vouched:
            level = budget.get("confidence", DEFAULT_CONFIDENCE)
            why = [f"{len(ok)} candidate(s) meet every budget by their point estimates, but none at {level:.0%} "
                   "confidence: nothing can be vouched for"]
            why += [f"trial {r['trial']}: " + "; ".join(reasons) for r, reasons in verdicts[:3]]
            return {"selected": ranked[0], "meets_budget": False, "why": why}
        first = ranked.index(vouched[0])
        passed_over = verdicts[:first]
        ranked = vouched
    best, m = ranked[0], ranked[0]["metrics"]
    ties = [r for r in ranked[1:] if key(r)[0] == key(best)[0]]
    margins = [_margin_text(o, m, budget) for o in limited]
    tightest = min(resources, key=lambda o: -o.violation(m[o.name], budget[o.budget_key]) / budget[o.budget_key])
    why = [f"policy {policy}: {goal} of {len(ok)} candidates that meet every budget (of {len(rows)} completed)",
           "margins: " + "; ".join(margins),
           f"tightest resource budget: {tightest.name}"]
    why += [line for line in [slices_text(m, budget)] if line]
    for r, reasons in passed_over:
        why.append(f"trial {r['trial']} ranks higher and meets every budget by its point estimates, but not at "
                   f"{budget.get('confidence', DEFAULT_CONFIDENCE):.0%} confidence ({'; '.join(reasons)}): passed over")
    if ties:
        why.append(f"tied with trial(s) {', '.join(str(r['trial']) for r in ties)}: broken by {tie_rule}")
    for r in ranked[1:3]:
        why.append(f"runner-up trial {r['trial']}: {_trade(m, r['metrics'], objectives)}")
    return {"selected": best, "meets_budget": True, "why": why}


def _hv2d(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    area, best_y = 0.0, ref[1]
    for x, y in sorted(points):
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return area


def hypervolume(rows: list[dict], budget: dict) -> float:
    """Volume of objective space inside the budget box that the rows dominate (exact, by slicing).

    Minimisation form: each objective as its violation of the budget (accuracy: floor - accuracy; p99:
    p99 - budget; memory: memory - budget) against 0; only rows within every budget count. Units:
    accuracy points(fraction) x ms x MB.
    """
    objectives = for_budget(budget)
    pts = sorted((tuple(o.violation(r[o.name], budget[o.budget_key]) for o in objectives)
                  for r in rows if feasible(r, budget)), key=lambda p: p[2])
    volume = 0.0
    for i, p in enumerate(pts):
        top = pts[i + 1][2] if i + 1 < len(pts) else 0.0
        if top > p[2]:
            volume += _hv2d([(q[0], q[1]) for q in pts[:i + 1]], (0.0, 0.0)) * (top - p[2])
    return volume

"""Pure functions over finished trials: feasibility, the Pareto front, and the deploy choice with reasons."""
from __future__ import annotations

# objective -> +1 if higher is better, -1 if lower is better
OBJECTIVES = {"accuracy": +1, "p99_latency_ms": -1, "memory_mb": -1}


def violations(metrics: dict, budget: dict) -> dict:
    """Amount by which each budget is missed (<= 0 means met); budget has an absolute accuracy_floor."""
    return {"memory_mb": metrics["memory_mb"] - budget["memory_mb"],
            "p99_latency_ms": metrics["p99_latency_ms"] - budget["p99_latency_ms"],
            "accuracy": budget["accuracy_floor"] - metrics["accuracy"]}


def feasible(metrics: dict, budget: dict) -> bool:
    return all(v <= 0 for v in violations(metrics, budget).values())


def dominates(a: dict, b: dict) -> bool:
    at_least = all(sign * a[k] >= sign * b[k] for k, sign in OBJECTIVES.items())
    better = any(sign * a[k] > sign * b[k] for k, sign in OBJECTIVES.items())
    return at_least and better


def front(rows: list[dict]) -> list[dict]:
    """Non-dominated rows (accuracy up, p99 latency down, memory down), in input order."""
    return [r for r in rows if not any(dominates(o, r) for o in rows if o is not r)]


def _margin_text(key: str, metrics: dict, budget: dict) -> str:
    if key == "accuracy":
        m = metrics["accuracy"] - budget["accuracy_floor"]
        return f"accuracy {metrics['accuracy']:.4f} vs floor {budget['accuracy_floor']:.4f} (margin {m * 100:+.2f} pts)"
    unit = "MB" if key == "memory_mb" else "ms"
    m = budget[key] - metrics[key]
    return (f"{key} {metrics[key]:.2f} vs budget {budget[key]:g} {unit} "
            f"(margin {m:+.2f} {unit}, {100 * m / budget[key]:+.0f}%)")


def _trade(a: dict, b: dict) -> str:
    return (f"{(b['accuracy'] - a['accuracy']) * 100:+.2f} pts accuracy, "
            f"{b['p99_latency_ms'] - a['p99_latency_ms']:+.2f} ms p99, {b['memory_mb'] - a['memory_mb']:+.2f} MB")


POLICIES = ("accuracy", "latency", "memory", "knee")


def _knee_distance(rows: list[dict]) -> dict:
    """Distance to the utopia point after scaling each objective to [0, 1] over the rows (flat dicts)."""
    span = {}
    for k in OBJECTIVES:
        vals = [r[k] for r in rows]
        span[k] = (min(vals), max(vals) - min(vals) or 1.0)
    dist = {}
    for r in rows:
        parts = []
        for k, sign in OBJECTIVES.items():
            lo, width = span[k]
            x = (r[k] - lo) / width
            parts.append((1 - x) if sign > 0 else x)  # 0 = best value seen
        dist[r["trial"]] = sum(p * p for p in parts) ** 0.5
    return dist


def _ranking(policy: str, ok: list[dict]):
    """Sort key and the sentence that says what the policy optimises; later keys break ties."""
    acc = lambda r: -r["metrics"]["accuracy"]  # noqa: E731
    p99 = lambda r: r["metrics"]["p99_latency_ms"]  # noqa: E731
    mem = lambda r: r["metrics"]["memory_mb"]  # noqa: E731
    if policy == "accuracy":
        return (lambda r: (acc(r), p99(r), mem(r))), "most accurate", "lower p99 latency, then lower memory"
    if policy == "latency":
        return (lambda r: (p99(r), acc(r), mem(r))), "lowest p99 latency", "higher accuracy, then lower memory"
    if policy == "memory":
        return (lambda r: (mem(r), acc(r), p99(r))), "smallest memory", "higher accuracy, then lower p99 latency"
    if policy == "knee":
        dist = _knee_distance(front([r["metrics"] | {"trial": r["trial"]} for r in ok]))
        return ((lambda r: (dist.get(r["trial"], float("inf")), acc(r))),
                "knee of the front (closest to the best of all three objectives, each scaled to [0, 1])",
                "higher accuracy")
    raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")


def select(rows: list[dict], budget: dict, policy: str = "accuracy") -> dict:
    """Pick the deploy candidate among those within every budget (default: the most accurate).

    rows: {"trial", "params", "metrics"} of completed trials. Returns {"selected", "meets_budget", "why"}.
    """
    if not rows:
        return {"selected": None, "meets_budget": False, "why": ["no trial completed"]}
    ok = [r for r in rows if feasible(r["metrics"], budget)]
    if not ok:
        def excess(r):  # shortfall summed over budgets (resources relative, accuracy in fraction points)
            v = violations(r["metrics"], budget)
            return max(0.0, v["accuracy"]) + sum(max(0.0, v[k]) / budget[k] for k in ("memory_mb", "p99_latency_ms"))
        closest = min(rows, key=excess)
        missed = {k for r in rows for k, v in violations(r["metrics"], budget).items() if v > 0}
        never = [k for k in OBJECTIVES if all(violations(r["metrics"], budget)[k] > 0 for r in rows)]
        why = [f"no candidate met every budget; missed: {', '.join(sorted(missed))}"
               + (f"; no candidate met {', '.join(never)} at all" if never else ""),
               f"closest: trial {closest['trial']}: "
               + "; ".join(_margin_text(k, closest["metrics"], budget) for k in OBJECTIVES)]
        return {"selected": closest, "meets_budget": False, "why": why}
    key, goal, tie_rule = _ranking(policy, ok)
    ranked = sorted(ok, key=key)
    best, m = ranked[0], ranked[0]["metrics"]
    ties = [r for r in ranked[1:] if key(r)[0] == key(best)[0]]
    margins = {k: _margin_text(k, m, budget) for k in OBJECTIVES}
    tightest = min(("memory_mb", "p99_latency_ms"), key=lambda k: (budget[k] - m[k]) / budget[k])
    why = [f"policy {policy}: {goal} of {len(ok)} candidates that meet every budget (of {len(rows)} completed)",
           "margins: " + "; ".join(margins.values()),
           f"tightest resource budget: {tightest}"]
    if ties:
        why.append(f"tied with trial(s) {', '.join(str(r['trial']) for r in ties)}: broken by {tie_rule}")
    for r in ranked[1:3]:
        why.append(f"runner-up trial {r['trial']}: {_trade(m, r['metrics'])}")
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

    Minimisation form: (floor - accuracy, p99, memory) against (0, p99 budget, memory budget); only
    rows within every budget count. Units: accuracy points(fraction) x ms x MB.
    """
    ref = (0.0, budget["p99_latency_ms"], budget["memory_mb"])
    pts = sorted(((budget["accuracy_floor"] - r["accuracy"], r["p99_latency_ms"], r["memory_mb"])
                  for r in rows if feasible(r, budget)), key=lambda p: p[2])
    volume = 0.0
    for i, p in enumerate(pts):
        top = pts[i + 1][2] if i + 1 < len(pts) else ref[2]
        if top > p[2]:
            volume += _hv2d([(q[0], q[1]) for q in pts[:i + 1]], ref[:2]) * (top - p[2])
    return volume

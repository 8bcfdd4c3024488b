"""Each objective's name, direction, unit and budget key, defined once; the study, the Pareto front,
selection, the tables and the dashboard read them from here.

A run's objectives are its task type's quality objective (accuracy for classification; a divergence
or perplexity ceiling for a language model) plus the two resources every device budgets: latency (p99 of
one inference for an encoder; p99 time per output token for a language model) and memory. A budget may add
constraints that are not objectives (a language model's time to first token)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Objective:
    name: str  # the metric key in a trial's metrics, and the Optuna metric name
    direction: str  # "maximize" | "minimize"
    budget_key: str  # the resolved budget's key: a floor for maximized objectives, a ceiling otherwise
    unit: str
    p50: str = ""  # a latency objective's typical-case companion metric (its median), reported beside it
    se: str = ""  # a quality objective measured as a mean: the metric holding its standard error

    @property
    def sign(self) -> int:
        """+1 if higher is better."""
        return 1 if self.direction == "maximize" else -1

    def violation(self, value: float, limit: float) -> float:
        """How far `value` misses `limit` (<= 0: met)."""
        return (limit - value) if self.sign > 0 else (value - limit)

    def better(self, a: float, b: float) -> bool:
        return self.sign * a > self.sign * b


ACCURACY = Objective("accuracy", "maximize", "accuracy_floor", "fraction")
# a language model against its teacher on held-out text (tasks/causal_lm.py measures them)
KLD_MEAN = Objective("kld_mean", "minimize", "kld_ceiling", "nats/token", se="kld_mean_se")
TOP1_AGREEMENT = Objective("top1_agreement", "maximize", "top1_agreement_floor", "fraction", se="top1_agreement_se")
PERPLEXITY_RATIO = Objective("perplexity_ratio", "minimize", "perplexity_ratio_ceiling", "x teacher",
                             se="perplexity_ratio_se")
P99_LATENCY = Objective("p99_latency_ms", "minimize", "p99_latency_ms", "ms", p50="p50_latency_ms")
# a language model: p99 over every generated token of the time one decode step takes; time to first token
# (prefill of the prompt, median over rounds) is a budget, not an objective
TPOT_P99 = Objective("tpot_p99_ms", "minimize", "tpot_p99_ms", "ms", p50="tpot_p50_ms")
TTFT = Objective("ttft_ms", "minimize", "ttft_ms", "ms")
MEMORY = Objective("memory_mb", "minimize", "memory_mb", "MB")
RESOURCES = (P99_LATENCY, MEMORY)
QUALITY = {o.name: o for o in (ACCURACY, KLD_MEAN, TOP1_AGREEMENT, PERPLEXITY_RATIO)}  # quality objectives by name (task types pick theirs)
LATENCY = {o.name: o for o in (P99_LATENCY, TPOT_P99)}
EXTRA_CONSTRAINTS = (TTFT,)  # budgeted when the budget names them; never optimised


def for_budget(budget: dict) -> tuple[Objective, ...]:
    """The objectives of a run, from its resolved budget (which names its quality and latency objectives):
    (quality, latency, memory)."""
    return (QUALITY[budget.get("quality", ACCURACY.name)], LATENCY[budget.get("latency", P99_LATENCY.name)],
            MEMORY)


def constraints(budget: dict) -> tuple[Objective, ...]:
    """Everything the budget limits: the objectives, and the extra constraints it names."""
    return for_budget(budget) + tuple(o for o in EXTRA_CONSTRAINTS if budget.get(o.budget_key) is not None)


def quality(budget: dict) -> Objective:
    return for_budget(budget)[0]


# Slices: a task may name evaluation slices (a language, a source); its quality objective is then measured on each
# (metric `<objective>@<slice>`), and the resolved budget's `slices` holds each slice's limit. Every slice must meet
# its limit: the average alone hides the slice a compressed model breaks on.
SLICE_SEP = "@"


def slice_key(name: str, slice_name: str) -> str:
    return f"{name}{SLICE_SEP}{slice_name}"


@dataclass(frozen=True)
class SliceLimit:
    """The quality objective on one slice, against that slice's limit."""
    objective: Objective
    slice: str
    limit: float

    @property
    def key(self) -> str:  # the metric key, the constraint's and the bound's name
        return slice_key(self.objective.name, self.slice)


def slice_limits(budget: dict) -> tuple[SliceLimit, ...]:
    """Each slice's quality limit, in the order the task names its slices (none: the task has no slices)."""
    q = quality(budget)
    return tuple(SliceLimit(q, name, float(limit)) for name, limit in budget.get("slices", {}).items())


def limits(budget: dict) -> tuple[tuple[str, Objective, float], ...]:
    """Every limit the budget sets, as (name, objective, limit): each constraint, then the quality objective on each
    slice (`accuracy@tweets`). What violations, bounds and their reasons all iterate."""
    return (tuple((o.name, o, budget[o.budget_key]) for o in constraints(budget))
            + tuple((s.key, s.objective, s.limit) for s in slice_limits(budget)))


SE_WINDOWS = "se_windows"  # a metric: how many evaluation windows a mean's standard error is across


def slice_columns(budget: dict) -> tuple[str, ...]:
    """The metrics each slice adds to a trial's row: the quality objective on it, and what its bound needs."""
    out = []
    for s in slice_limits(budget):
        out.append(s.key)
        if s.objective.se:
            out += [slice_key(s.objective.se, s.slice), slice_key(SE_WINDOWS, s.slice)]
    return tuple(out)


def slice_values(metrics: dict, name: str) -> dict:
    """{slice: value} of the metric `name` measured per slice."""
    prefix = name + SLICE_SEP
    return {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}

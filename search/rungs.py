"""Multi-fidelity: which trials earn a second rung of training, decided once their first rung is measured.

Every trial first trains its student for the recipe's `distill.epochs` (rung 0: cheap) and is measured as it would
ship. A trial then earns more distillation (rung 1: `promote.epochs` more, early-stopped on a held-out slice of the
training data) only when it could still reach the quality floor: it is within every resource budget, its quality
cannot yet be vouched for at the floor, and it is one of the warm start's brackets (the largest student the budget
admits, its compact form, the narrow end: judged after the longer training), or its point estimate is within
`promote.within` of the floor, or it is the best first-rung quality within the resource budgets once MIN_RIVALS
trials compare (when every short-trained student falls far below the floor,
the most promising shape gets the training instead of more small ones being sampled). Each trial records the rung
it reached and why it stopped there.

Written here because Optuna's pruners do not support multi-objective studies (`trial.report` raises there).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import pareto
from .objectives import constraints, for_budget, slice_limits

MIN_RIVALS = 4  # first-rung trials within the resource budgets before "the best so far" means anything


@dataclass(frozen=True)
class Promotion:
    """A space's `promote` section: how much more training a promoted student gets, and who is promoted."""

    epochs: float = 0.0  # more distillation epochs for a promoted student; 0: no second rung
    within: float = 0.05  # promote when the point quality is within this of the floor (objective units)
    patience: int = 2  # early stopping: held-out checks (each half an epoch) without improvement before stopping

    @property
    def on(self) -> bool:
        return self.epochs > 0


def first_rung_quality(row_metrics: dict, quality_name: str) -> float:
    """A trial's quality after its first rung (what trials are compared by before any promotion)."""
    return row_metrics.get(f"rung0_{quality_name}", row_metrics[quality_name])


def promotion(metrics: dict, vouched: bool, budget: dict, earlier: list[dict], promote: Promotion,
              bracket: str | None = None) -> tuple[bool, str]:
    """(promote?, why) for a trial measured at its first rung. `vouched`: its quality bound already meets the floor;
    `earlier`: the metrics of the run's earlier completed trials; `bracket`: which of the warm start's brackets it is
    (where the budget screens recipes out: the largest student the budget admits, its compact form, the narrow
    end), if any."""
    quality = for_budget(budget)[0]
    if not promote.on:
        return False, "one rung: the space has no promote section"
    limited = {o.name for o in constraints(budget)[1:]}  # the resource budgets (not quality, nor its slices)
    over = {k: v for k, v in pareto.shipping_violations(metrics, budget).items() if k in limited and v > 0}
    if over:
        return False, f"stays at rung 0: outside the {', '.join(over)} budget"
    if vouched:
        return False, f"stays at rung 0: its {quality.name} is already vouched for at the floor"
    resources = [o.name for o in for_budget(budget)[1:]]
    needs = pareto.shipping_violations(metrics, budget)
    for m in earlier:  # reaching the floor would not put it on the front: a shippable trial needs no more of anything
        if pareto.feasible(m, budget) and all(pareto.shipping_violations(m, budget)[r] <= needs[r] for r in resources):
            return False, ("stays at rung 0: an earlier trial meets every budget with no more "
                           f"{' or '.join(resources)}: at the floor this one could not join the front")
    # > 0: below the floor by this much (on the whole set, or on the slice that misses most)
    gap = max([quality.violation(metrics[quality.name], budget[quality.budget_key])]
              + [x.objective.violation(metrics[x.key], x.limit) for x in slice_limits(budget)])
    if bracket:  # a deliberate probe of the admitted range is judged after the longer training, not at one epoch
        where = f"{gap:.3g} below the floor" if gap > 0 else "at or above the floor, not yet vouched for"
        return True, f"promoted: {bracket} ({where}): a bracket of the warm start gets the longer training"
    if gap <= promote.within:
        return True, (f"promoted: {quality.name} {metrics[quality.name]:.4g} is within {promote.within:g} of the "
                      f"floor {budget[quality.budget_key]:.4g} and within the resource budgets")
    rivals = [first_rung_quality(m, quality.name) for m in earlier if "same_recipe_as_trial" not in m  # one model once
              and not any(v > 0 for k, v in pareto.shipping_violations(m, budget).items() if k in limited)]
    if len(rivals) < MIN_RIVALS:
        return False, (f"stays at rung 0: {gap:.3g} below the floor (more than {promote.within:g}); the best is "
                       f"promoted only once {MIN_RIVALS} trials within the resource budgets compare")
    if all(quality.sign * metrics[quality.name] > quality.sign * r for r in rivals):
        return True, (f"promoted: {gap:.3g} below the floor, but the best first-rung {quality.name} within the "
                      f"resource budgets so far (of {len(rivals) + 1}): the most promising shape gets the training")
    return False, (f"stays at rung 0: {gap:.3g} below the floor (more than {promote.within:g}) and not the best "
                   "within the resource budgets")

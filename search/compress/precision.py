"""Per-layer precision by an exact solver (`quant.precision: solver`): each encoder layer's weight-only bits and
group size are chosen to minimise the summed measured sensitivity, within the bytes the recipe may spend (its
`high_precision_fraction` of the way from the cheapest allocation to every layer at 8 bits) and the memory and
latency the budget leaves for the encoder's matrices, each option priced by the cost model (bytes as the backend
stores them; latency by the calibrated roofline's kernel classes, so a slower kernel costs what it costs, not just
its bits).

A multiple-choice knapsack with two resources: exact by scipy's MILP (HiGHS), the field's well-kept solver; a
handful of layers x a dozen options solves in milliseconds. Sensitivities are summed: each is measured with one
layer rounded and the others in full precision (the additive approximation mixed-precision methods such as
HAWQ make), which the solver cannot do better than.

The recipe's own `bits` and `group_size` bound the options from below: every option keeps at least as many bits
and blocks at most as wide. The screen prices the cheapest runnable allocation (allocation.cheapest), a lower
bound of whatever the solver chooses, so a recipe the screen admits always has an allocation that fits in bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..candidate import GROUP_SIZES, QuantParams
from .grid import CHANNEL

WEIGHT_ONLY_BITS = (2, 4, 8)


@dataclass(frozen=True)
class Priced:
    """One layer at one option: what the solver weighs."""

    sensitivity: float  # KL(full precision || this layer at this option) on the calibration batch
    bytes: float  # the layer's matrices as stored
    latency_ms: float  # the layer's matrix kernels' share of the estimated p99 (cost model)


def options(quant: QuantParams) -> list[tuple[int, int | str]]:
    """(bits, group) a layer may take: at least the recipe's bits, blocks at most as wide as the recipe's (per
    channel is the widest)."""
    def fits(g):
        return quant.group_size == CHANNEL or (g != CHANNEL and int(g) <= int(quant.group_size))
    return [(b, g) for b in WEIGHT_ONLY_BITS if b >= quant.bits for g in GROUP_SIZES if fits(g)]


def solve(table: list[list[Priced]], max_bytes: float, max_latency_ms: float | None = None) -> list[int] | None:
    """The option index per layer minimising the summed sensitivity with the summed bytes <= max_bytes and the
    summed latency <= max_latency_ms (None: no latency limit); None when no choice fits."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    sizes = [len(row) for row in table]
    if not table or min(sizes) == 0:
        raise ValueError("every layer needs at least one option")
    flat = [p for row in table for p in row]
    n = len(flat)
    start = np.cumsum([0] + sizes)
    one_each = np.zeros((len(table), n))
    for i, (a, b) in enumerate(zip(start[:-1], start[1:])):
        one_each[i, a:b] = 1
    constraints = [LinearConstraint(one_each, 1, 1),
                   LinearConstraint([[p.bytes for p in flat]], -np.inf, max_bytes)]
    if max_latency_ms is not None:
        constraints.append(LinearConstraint([[p.latency_ms for p in flat]], -np.inf, max_latency_ms))
    # a KL below 0 is float noise; ties (options measured equally sensitive) go to the cheaper one: a pull towards
    # fewer bytes a million times smaller than the largest sensitivity
    sens = np.maximum([p.sensitivity for p in flat], 0.0)
    scale_bytes = max(abs(p.bytes) for p in flat) or 1.0
    cost = sens + 1e-6 * (sens.max() or 1.0) * np.array([p.bytes for p in flat]) / scale_bytes
    res = milp(cost, constraints=constraints, integrality=np.ones(n), bounds=Bounds(0, 1))
    if res.status != 0 or res.x is None:
        return None
    x = np.round(res.x).astype(int)
    return [int(np.argmax(x[a:b])) for a, b in zip(start[:-1], start[1:])]

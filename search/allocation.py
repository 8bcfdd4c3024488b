"""`quant.precision: solver`: price every layer's (bits, group) options with this run's cost model and let the
exact solver (compress/precision.py) choose, within what the target's budget leaves for the encoder's matrices.

Bytes: the backend's own prediction of the artifact's weights (`predicted_weight_bytes`, held within 3% of built
artifacts by tests), plus the activation peak the screen counts. Latency: the roofline with the target's factors
(calibrated per kernel class where a calibration file exists), at the bound the run ships by: an estimated p99
times the estimator's stated error, a measured device's estimate as the predictor (its measured bound is checked
afterwards, like any trial's). Both are additive over layers (same tensors, same operators per layer), so each
option is priced as its difference to the cheapest allocation (every layer at the fewest bytes).
"""
from __future__ import annotations

from dataclasses import replace

from .candidate import QuantParams
from .compress import precision, weight_only
from .errors import CandidateError
from .measure import memory, roofline


PREDICTION_MARGIN = 1.03  # the backend's byte prediction is held within 3% of built artifacts (tests)


def _p99_ms(ctx, shape, quant: QuantParams, sparse_2_4: bool) -> float:
    wl = ctx.target.workload
    return roofline.estimate(shape, quant, ctx.target.device, wl.batch_size, wl.sequence_length, sparse_2_4).p99_ms


def runnable_options(ctx, shape, quant: QuantParams) -> list[tuple]:
    """The solver's options for this recipe that the backend can run (the screen rejects a solver recipe only
    when none is left)."""
    return [o for o in precision.options(quant)
            if not ctx.backend.check(shape, replace(quant, bits=o[0], group_size=o[1], precision="uniform"))]


def cheapest(ctx, shape, quant: QuantParams) -> QuantParams | None:
    """A solver recipe at the fewest bytes it can ship (every layer at the cheapest runnable option): what the screen
    prices before training, a lower bound of whatever the solver chooses. None: no option runs."""
    opts = runnable_options(ctx, shape, quant)
    if not opts:
        return None
    priced = [replace(quant, layer_options=(o,) * shape.layers) for o in opts]
    return min(priced, key=lambda q: ctx.backend.predicted_weight_bytes(shape, q))


def allocate(ctx, student, quant: QuantParams, sparse_2_4: bool = False, log=print) -> tuple[QuantParams, dict]:
    """The recipe with each layer's (bits, group) chosen (`layer_options`), and what the solver did (for the
    trial's record). Raises CandidateError when no option set is left for the backend."""
    shape = ctx.family.shape_of(student)
    n = shape.layers
    opts = runnable_options(ctx, shape, quant)
    if not opts:
        raise CandidateError(f"quant.precision=solver: no (bits, group) option at or above {quant.bits} bits, "
                             f"blocks <= {quant.group_size}, that {ctx.backend.name} can run")

    def uniform(options: tuple) -> QuantParams:
        return replace(quant, layer_options=options)

    def weight(options: tuple) -> int:
        return ctx.backend.predicted_weight_bytes(shape, uniform(options))

    # prices are differences to the allocation with the fewest bytes (the recipe's bits, widest block allowed)
    low = min(range(len(opts)), key=lambda k: weight((opts[k],) * n))
    base = (opts[low],) * n

    def with_layer(i: int, o) -> tuple:
        return base[:i] + (o,) + base[i + 1:]

    base_bytes = weight(base)
    dev, budget, wl = ctx.target.device, ctx.target.budget, ctx.target.workload
    priced_latency = bool(dev.peak_tops)  # a measured device without a spec: bytes only
    ms = (lambda options: _p99_ms(ctx, shape, uniform(options), sparse_2_4)) if priced_latency else (lambda _: 0.0)
    base_ms = ms(base)
    sensitivity = {o: weight_only.layer_sensitivity(student, o[0], o[1], ctx.calibration) for o in opts}
    table = [[precision.Priced(sensitivity[o][i], weight(with_layer(i, o)) - base_bytes, ms(with_layer(i, o)) - base_ms)
              for o in opts] for i in range(n)]
    room = (budget.memory_mb * memory.MB
            - memory.activation_bytes(shape, wl.batch_size, wl.sequence_length)) / PREDICTION_MARGIN
    # the recipe's high_precision_fraction: the share of the bytes from the cheapest allocation to every layer at
    # 8 bits in the recipe's group size that it may spend (0: the uniform recipe; the same bytes the ranking rule
    # spends on whole layers), so the search still trades size for fidelity along the front; the solver decides
    # where those bytes go
    high = (weight_only.HIGH_BITS, quant.group_size)
    top_bytes = weight((high,) * n) if high in opts else max(weight((o,) * n) for o in opts)
    spend = base_bytes + quant.high_precision_fraction * (top_bytes - base_bytes)
    max_p99 = None
    if priced_latency:
        error = dev.latency_error_pct if dev.latency == "estimated" and dev.latency_error_pct else 0.0
        max_p99 = budget.p99_latency_ms / (1 + error / 100)
    record = {"options": [f"w{b}g{g}" for b, g in opts], "spend_weight_mb": round(spend / memory.MB, 3),
              "budget_weight_mb": round(room / memory.MB, 3), "spend": quant.high_precision_fraction,
              "max_p99_ms": max_p99, "latency_priced": priced_latency}
    latency = None if max_p99 is None else max_p99 - base_ms
    # the budget is hard, the recipe's share is a knob: where the share cannot meet the latency budget, the room
    # the memory budget leaves may buy it (on a device whose low-bit kernels are slower, more bits are faster);
    # where nothing meets it, the share of bytes alone decides and the trial is judged by its measurement
    attempts = [(min(room, spend), latency, "optimal"),
                (room, latency, "optimal within the budgets; the recipe's share of bytes could not meet the latency "
                                "budget"),
                (min(room, spend), None, "optimal for the bytes; no allocation meets the latency budget")]
    chosen = None
    for max_bytes, max_ms, status in attempts if latency is not None else attempts[:1]:
        chosen = precision.solve(table, max_bytes - base_bytes, max_ms)
        if chosen is not None:
            record["status"] = status
            break
    if chosen is None:  # not even the bytes: the cheapest allocation
        record["status"] = "no allocation fits the memory budget: every layer at the cheapest option"
        chosen = [low] * n
    layer_options = tuple(opts[c] for c in chosen)
    record["objective_kl"] = float(sum(table[i][c].sensitivity for i, c in enumerate(chosen)))
    record["layers"] = [f"w{b}g{g}" for b, g in layer_options]
    record["layer_options"] = [list(o) for o in layer_options]  # replan prices the shipped allocation from this
    log(f"  precision: solver chose {', '.join(record['layers'])} ({record['status']})")
    return uniform(layer_options), record

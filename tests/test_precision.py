"""Per-layer precision by the solver: exact against brute force, options no cheaper than the recipe, the choice
follows the budget and the measured sensitivity, and the artifact is built (and priced) as chosen."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TINY_ESTIMATED_DEVICE, calib, nbits_by_layer
from search import allocation, families
from search.backends.onnxruntime import OnnxRuntime
from search.candidate import QuantParams
from search.compress import precision
from search.measure import memory, roofline

ORT = OnnxRuntime()

# byte and latency differences to the cheapest allocation may be negative (a narrower block can pad less)
priced = st.builds(precision.Priced, st.floats(0, 10), st.integers(-30, 100).map(float),
                   st.integers(-20, 50).map(float))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(priced, min_size=1, max_size=4), min_size=1, max_size=4), st.integers(0, 300),
       st.one_of(st.none(), st.integers(0, 150)))
def test_solver_is_exact_against_brute_force(table, max_bytes, max_ms):
    def fits(pick):
        rows = [table[i][c] for i, c in enumerate(pick)]
        return sum(p.bytes for p in rows) <= max_bytes and (max_ms is None or sum(p.latency_ms for p in rows) <= max_ms)

    feasible = [pick for pick in itertools.product(*[range(len(r)) for r in table]) if fits(pick)]
    got = precision.solve(table, max_bytes, max_ms)
    if not feasible:
        assert got is None
        return
    assert got is not None and fits(got)
    best = min(sum(table[i][c].sensitivity for i, c in enumerate(pick)) for pick in feasible)
    # exact up to the tie-break's pull towards fewer bytes (1e-6 of the largest sensitivity per layer)
    tolerance = 1e-6 * len(table) * max(p.sensitivity for row in table for p in row) + 1e-9
    assert sum(table[i][c].sensitivity for i, c in enumerate(got)) == pytest.approx(best, abs=tolerance)


def test_options_are_never_cheaper_than_the_recipe():
    assert precision.options(QuantParams(4, 64)) == [(4, 16), (4, 32), (4, 64), (8, 16), (8, 32), (8, 64)]
    assert (2, "channel") in precision.options(QuantParams(2, "channel"))
    assert all(b >= 4 for b, _ in precision.options(QuantParams(4, "channel")))


def _ctx(model, split, tmp_path, memory_mb: float, p99_ms: float):
    from search.target import load_target

    (tmp_path / "t.yaml").write_text(TINY_ESTIMATED_DEVICE + f"budget: {{memory_mb: {memory_mb}, p99_latency_ms: "
                                                             f"{p99_ms}, accuracy_floor: {{max_drop: 0.5}}}}\n")
    return SimpleNamespace(family=families.of(model), backend=ORT, target=load_target(str(tmp_path / "t.yaml")),
                           calibration=calib(split, 16))


def test_the_choice_follows_the_budget_and_ships_as_chosen(model, split, tmp_path):
    import torch

    with torch.no_grad():  # like a trained model: rounding moves the outputs (a fresh tiny model barely reacts)
        for lin in families.of(model).linears(model):
            lin.weight.mul_(5.0)
    shape = families.of(model).shape_of(model)
    recipe = QuantParams(2, 32, precision="solver", high_precision_fraction=1.0)  # may spend up to all 8-bit
    activation_mb = memory.activation_bytes(shape, 1, 16) / memory.MB
    all_2 = ORT.predicted_weight_bytes(shape, QuantParams(2, 32)) / memory.MB
    all_8 = ORT.predicted_weight_bytes(shape, QuantParams(8, 32)) / memory.MB
    quiet = dict(log=lambda s: None)
    # room for everything at 8 bits: the least sensitive allocation is all 8-bit
    loose, record = allocation.allocate(_ctx(model, split, tmp_path, 1000, 1000), model, recipe, **quiet)
    assert record["status"] == "optimal" and {b for b, _ in loose.layer_options} == {8}
    # the recipe spends nothing beyond its own bits: the uniform 2-bit recipe, whatever the room
    zero, _ = allocation.allocate(_ctx(model, split, tmp_path, 1000, 1000), model,
                                  QuantParams(2, 32, precision="solver"), **quiet)
    assert ORT.predicted_weight_bytes(shape, zero) == ORT.predicted_weight_bytes(shape, QuantParams(2, 32))
    # room for the 2-bit recipe and a little more: some layers stay at 2 bits, the bytes fit, the KL is the least
    tight_mb = activation_mb + all_2 + 0.25 * (all_8 - all_2)  # all 4-bit would need a third of the way
    tight, record = allocation.allocate(_ctx(model, split, tmp_path, tight_mb, 1000), model, recipe, **quiet)
    assert record["status"] == "optimal" and 2 in {b for b, _ in tight.layer_options}
    assert ORT.predicted_weight_bytes(shape, tight) / memory.MB + activation_mb <= tight_mb
    assert record["objective_kl"] >= 0 and len(record["layers"]) == shape.layers
    # the same room spent by half the recipe's share: no more bytes than half the way
    half, _ = allocation.allocate(_ctx(model, split, tmp_path, 1000, 1000), model,
                                  QuantParams(2, 32, precision="solver", high_precision_fraction=0.5), **quiet)
    assert ORT.predicted_weight_bytes(shape, half) / memory.MB <= all_2 + 0.5 * (all_8 - all_2) + 1e-9
    # built as chosen, and the backend's byte prediction still matches the artifact
    path = ORT.build(model, tight, tmp_path / "art", calib(split, 16))
    assert nbits_by_layer(path) == {i: {b} for i, (b, _) in enumerate(tight.layer_options)}
    assert ORT.predicted_weight_bytes(shape, tight) == pytest.approx(ORT.weight_bytes(path), rel=0.03)
    # nothing fits: every layer at the cheapest option, and the record says so
    none, record = allocation.allocate(_ctx(model, split, tmp_path, activation_mb + 0.5 * all_2, 1000), model,
                                       recipe, **quiet)
    assert record["status"].startswith("no allocation fits") and {b for b, _ in none.layer_options} == {2}
    # a latency budget nothing meets: the bytes alone decide, and the record says so
    fast, record = allocation.allocate(_ctx(model, split, tmp_path, 1000, 0.001), model, recipe, **quiet)
    assert record["status"] == "optimal for the bytes; no allocation meets the latency budget"
    assert fast.layer_options == loose.layer_options


def test_the_roofline_prices_each_layer_at_its_chosen_bits():
    from search.families.base import ModelShape
    from search.target import load_target

    n = 4
    shape = ModelShape("bert_cls", n, 384, (12,) * n, (1536,) * n, 30522, 32, positions=512, segments=2, outputs=2)
    device = load_target("local_cpu").device  # calibrated here: 2-bit kernels fitted slower than 8-bit ones
    assert {"w2", "w8"} <= set(device.fitted_kernels)
    ms = lambda q: roofline.estimate(shape, q, device, 1, 128).p99_ms  # noqa: E731
    mixed = QuantParams(2, 32, precision="solver", layer_options=((8, 32),) + ((2, 32),) * (n - 1))
    all_2 = QuantParams(2, 32, precision="solver", layer_options=((2, 32),) * n)
    all_8 = QuantParams(2, 32, precision="solver", layer_options=((8, 32),) * n)
    # each layer at its kernel class's fitted speed: fewer bits is not cheaper where the kernel is slower
    assert ms(all_8) < ms(mixed) < ms(all_2)
    assert ms(all_2) == pytest.approx(ms(QuantParams(2, 32)))  # the same as the uniform recipe
    b = lambda q: ORT.predicted_weight_bytes(shape, q)  # noqa: E731
    assert b(all_2) == b(QuantParams(2, 32)) < b(mixed) < b(all_8)


def test_a_2bit_per_channel_solver_recipe_is_screened_at_a_block_onnxruntime_runs(model):
    """2-bit per-channel blocks wider than 256 do not run in onnxruntime: the uniform recipe is refused, the solver
    recipe is priced at its cheapest runnable option (a narrower 2-bit block) and admitted."""
    from search.families.base import ModelShape

    shape = ModelShape("bert_cls", 2, 384, (12, 12), (1536, 1536), 1000, 32, positions=512, segments=2, outputs=2)
    ctx = SimpleNamespace(backend=ORT)
    assert ORT.check(shape, QuantParams(2, "channel"))
    cheapest = allocation.cheapest(ctx, shape, QuantParams(2, "channel", precision="solver"))
    assert cheapest is not None and ORT.check(shape, cheapest) == []
    assert {b for b, _ in cheapest.layer_options} == {2}
    assert all(g != "channel" and g <= 256 for _, g in cheapest.layer_options)

"""Calibration recovers known roofline factors, and a calibration file is picked up by the target."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from search.bench.latency import random_shapes
from search.measure import calibrate, roofline
from search.target import load_target


def test_fit_recovers_synthetic_measurements(tmp_path):
    device = load_target("local_cpu").device
    truth = replace(device, compute_efficiency={"fp32": 0.6, "int8": 0.3, "w8": 0.15, "w4": 0.1}, bandwidth_efficiency=0.5,
                    op_overhead_us=25.0, block_cost_ns={"w4": 20.0, "w2": 8.0})
    cases = [{"shape": s, "quant": q, "batch": 1, "seq": 128} for s, q in random_shapes(30, seed=1)]
    measured = [roofline.estimate(c["shape"], c["quant"], truth, 1, 128).p50_ms for c in cases]
    fitted = calibrate.fit(cases, measured, device)
    for c, m in zip(cases, measured):
        assert roofline.estimate(c["shape"], c["quant"], fitted, 1, 128).p50_ms == pytest.approx(m, rel=0.03)
    # w4 and w2 come at two block sizes each in random_shapes: their cost per block is told apart and recovered
    assert fitted.block_cost_ns["w4"] == pytest.approx(20.0, rel=0.15)
    assert fitted.block_cost_ns["w2"] == pytest.approx(8.0, rel=0.3)


def test_a_block_cost_is_fitted_only_for_a_class_measured_at_two_block_sizes():
    """One block size: the cost per block is a multiple of the FLOPs', any split fits; it is not fitted (0)."""
    from search.candidate import QuantParams

    device = load_target("local_cpu", calibrated=False).device
    cases = [{"shape": s, "quant": QuantParams(4, 32), "batch": 1, "seq": 128} for s, _ in random_shapes(8, seed=3)]
    measured = [roofline.estimate(c["shape"], c["quant"], device, 1, 128).p50_ms for c in cases]
    assert "w4" not in calibrate.fit(cases, measured, device, steps=50).block_cost_ns


def test_calibration_file_overrides_assumed_factors(tmp_path):
    target = tmp_path / "dev.yaml"
    target.write_text((load_target("local_cpu").path).read_text())
    (tmp_path / "dev.calibration.json").write_text(json.dumps(
        {"compute_efficiency": {"fp32": 0.7, "int8": 0.2}, "bandwidth_efficiency": 0.4, "op_overhead_us": 12.0,
         "measured_runs": 16}))
    dev = load_target(str(target)).device
    assert dev.compute_efficiency == {"fp32": 0.7, "int8": 0.2} and dev.op_overhead_us == 12.0
    assert dev.calibration.startswith("calibrated on 16 measured artifacts")
    (tmp_path / "dev.calibration.json").write_text("{not json")
    from search.errors import ConfigError

    with pytest.raises(ConfigError, match="dev.calibration.json: -: unreadable calibration"):
        load_target(str(target))


def test_only_the_kernel_classes_measured_are_fitted_and_the_others_say_assumed():
    from search.bench.latency import bench_shape
    from search.candidate import QuantParams

    device = load_target("local_cpu", calibrated=False).device
    cases = [{"shape": s, "quant": q, "batch": 1, "seq": 128} for s, q in random_shapes(12, seed=2)
             if q.bits in (32, 4)]
    measured = [roofline.estimate(c["shape"], c["quant"], device, 1, 128).p50_ms for c in cases]
    fitted = calibrate.fit(cases, measured, device, steps=50)
    assert set(fitted.fitted_kernels) == {"fp32", "w4"} == set(fitted.compute_efficiency)
    fitted = replace(fitted, calibration="calibrated on 12 measured artifacts (test)")
    shape = bench_shape(2, 256, 4, 512)
    assert "not calibrated" not in roofline.estimate(shape, QuantParams(4, 32), fitted, 1, 128).detail
    assert "kernel class w2 not calibrated: assumed" in roofline.estimate(shape, QuantParams(2, 64), fitted, 1,
                                                                         128).detail


def test_a_block_costs_what_the_fit_says_so_small_blocks_are_slower_than_their_bytes():
    """The solver prices a layer's group size by latency too: with a fitted cost per block, the same bits in blocks
    of 16 estimate slower than in blocks of 128, by the blocks' count times that cost (plus their scales' bytes)."""
    from search.bench.latency import bench_shape
    from search.candidate import QuantParams

    device = replace(load_target("local_cpu").device, block_cost_ns={"w4": 20.0})
    shape = bench_shape(2, 256, 4, 512)
    small, large = (roofline.estimate(shape, QuantParams(4, g), device, 1, 128).p50_ms for g in (16, 128))
    # 2 layers x (3 x 256x128 + 128x256 + 2 x 256x512 linears) = 2 x 393,216 weights; blocks of 16 vs 128
    blocks = 2 * 393_216 * (1 / 16 - 1 / 128)
    assert small - large == pytest.approx(blocks * 20e-6, rel=0.05)  # scale bytes: memory-bound ops only
    free = replace(device, block_cost_ns={})
    assert roofline.estimate(shape, QuantParams(4, 16), free, 1, 128).p50_ms < small
    int8 = QuantParams(8, None, "dynamic_int8")  # no blocks: no block cost
    assert roofline.estimate(shape, int8, device, 1, 128).p50_ms == roofline.estimate(shape, int8, free, 1, 128).p50_ms


def test_refit_reads_back_every_group_size_the_bench_writes(tmp_path):
    """`bench latency --refit` reads latency.csv again: per-channel rows ("channel") and int8 rows (no group)."""
    import pandas as pd

    from search.bench.latency import QUANTS, _from_csv

    rows = [{"candidate": f"c{i}", "measured_p50_ms": 1.0, "measured_p99_ms": 1.1, "spread": 0.01, "noisy": False,
             "layers": 2, "hidden": 256, "heads": 4, "ffn": 512, "bits": q.bits, "group_size": q.group_size,
             "activations": q.activations} for i, q in enumerate(QUANTS)]
    pd.DataFrame(rows).to_csv(tmp_path / "latency.csv", index=False)
    assert [r["quant"] for r in _from_csv(tmp_path / "latency.csv")] == QUANTS

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
                    op_overhead_us=25.0)
    cases = [{"shape": s, "quant": q, "batch": 1, "seq": 128} for s, q in random_shapes(20, seed=1)]
    measured = [roofline.estimate(c["shape"], c["quant"], truth, 1, 128).p50_ms for c in cases]
    fitted = calibrate.fit(cases, measured, device)
    for c, m in zip(cases, measured):
        assert roofline.estimate(c["shape"], c["quant"], fitted, 1, 128).p50_ms == pytest.approx(m, rel=0.03)


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

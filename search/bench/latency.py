"""`python -m search bench latency`: measure varied artifacts here, fit the roofline to half of them,
and report the predictor's error on the other half (and on all). Writes results/bench/latency.{csv,md}
and the fitted factors beside the target (targets/<name>.calibration.json)."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import backends, families
from ..candidate import QuantParams, quant_label
from ..compress.grid import CHANNEL
from ..errors import ConfigError
from ..families.base import ModelShape
from ..measure import calibrate, roofline
from ..target import Target
from . import summary as summary_file  # `summary` names the fit's figures here

# every kernel class the space can sample, the block-quantized ones at small and large blocks (a block's cost is
# fitted per class: it needs two block sizes or more per class to be told apart from the class's efficiency)
QUANTS = [QuantParams(32), QuantParams(8, None, "dynamic_int8"), QuantParams(8, 32), QuantParams(4, 32),
          QuantParams(4, 128), QuantParams(2, 64), QuantParams(8, None, "static_int8"), QuantParams(8, "channel"),
          QuantParams(4, 16), QuantParams(2, 16)]
TOLERANCE = 0.15


HEAD_DIM = 32  # the default teacher's (MiniLM) head width: the shapes the search samples for it


def bench_shape(layers: int, hidden: int, heads: int, ffn: int) -> ModelShape:
    """A student shape of the default family (the encoder classifier) with the teacher's vocabulary."""
    return ModelShape(family=families.DEFAULT, layers=layers, hidden=hidden, heads=(heads,) * layers, ffn=(ffn,) * layers,
                      vocab=30522, head_dim=HEAD_DIM, positions=512, segments=2, outputs=2)


def random_shapes(n: int, seed: int) -> list[tuple[ModelShape, QuantParams]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        hidden = rng.choice([128, 192, 256, 320, 384])
        layers = rng.randint(1, 6)
        heads = rng.randint(1, hidden // HEAD_DIM)
        ffn = rng.choice([256, 512, 768, 1024, 1536])
        shape = bench_shape(layers, hidden, heads, ffn)
        out.append((shape, QUANTS[i % len(QUANTS)]))
    return out


def build(shape: ModelShape, seed: int):
    """A model of this shape with random weights: latency does not depend on the weights' values."""
    return families.get(shape.family).random_model(shape, seed)


def run(target: Target, n: int, out_dir: Path, seed: int = 0, log=print, refit: bool = False) -> pd.DataFrame:
    """Measure n artifacts (or, with refit, reuse latency.csv's measurements), then evaluate and calibrate."""
    dev = target.device
    if "fp32" not in dev.peak_tops or dev.memory_bandwidth_gbps is None:
        raise ConfigError(target.path, "device.peak_tops", "latency prediction needs peak_tops and "
                                                           "memory_bandwidth_gbps for this device")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _from_csv(out_dir / "latency.csv") if refit else _measure(target, n, out_dir, seed, log)
    frame, summary, fitted = evaluate(rows, target, seed)
    frame.to_csv(out_dir / "latency.csv", index=False)
    calibration = {"compute_efficiency": fitted.compute_efficiency, "bandwidth_efficiency": fitted.bandwidth_efficiency,
                   "op_overhead_us": fitted.op_overhead_us, "run_overhead_us": fitted.run_overhead_us,
                   "block_cost_ns": fitted.block_cost_ns,
                   "measured_runs": summary["fitted_on"], "kernel_classes": list(fitted.fitted_kernels),
                   "code_version": _code_version(), "fitted": time.strftime("%Y-%m-%d"), **summary}
    target.calibration.write_text(json.dumps(calibration, indent=2))
    md = _markdown(frame, summary, calibration)
    summary_file.write(out_dir / "latency.md", md, dev.threads)
    log(md)
    return frame


def _code_version() -> str:
    """The commit the predictor and the probe were at when fitted (a fit belongs to the code that made it)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "search"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return (head + ("+uncommitted" if dirty else "")) if head else "unknown (no git)"


def _random_features(model, shape: ModelShape, n: int, seq: int, seed: int) -> dict:
    """Random inputs (token ids and full masks for a text family), named and shaped as the family's export takes
    them; ids start at 1000, past the special tokens."""
    spec = families.get(shape.family).export_spec(shape)
    g = torch.Generator().manual_seed(seed)

    def fill(i):
        dims = i.dims_for(n, seq)
        if i.fill == "ids":
            return torch.randint(1000, shape.vocab, dims, generator=g)
        if i.fill == "ones":
            return torch.ones(dims, dtype=getattr(torch, i.dtype))
        return torch.randn(dims, generator=g, dtype=getattr(torch, i.dtype))

    return {i.name: fill(i) for i in spec.probe_inputs}


def _measure(target: Target, n: int, out_dir: Path, seed: int, log) -> list[dict]:
    wl, dev = target.workload, target.device
    backend = backends.get(dev.runtime)
    rows = []
    for i, (shape, quant) in enumerate(random_shapes(n, seed)):
        t0 = time.perf_counter()
        model = build(shape, seed + i)
        # random calibration text: static int8 needs ranges; latency does not depend on their values
        calibration = _random_features(model, shape, 16, wl.sequence_length, i)
        path = backend.build(model, quant, out_dir / "latency-artifacts" / f"{i:03d}", calibration)
        lat = backend.measure_latency(path, shape, wl.batch_size, wl.sequence_length, dev.threads, runner=dev.runner)
        rows.append({"candidate": f"L{shape.layers} h{shape.hidden} a{shape.heads[0]} f{shape.ffn[0]} "
                                  f"{quant_label(quant)}", "shape": shape, "quant": quant,
                     "measured_p50_ms": lat.p50_ms, "measured_p99_ms": lat.p99_ms, "spread": lat.spread,
                     "noisy": lat.noisy})
        log(f"[{i + 1}/{n}] {rows[-1]['candidate']:32s} p50 {lat.p50_ms:7.2f} ms  p99 {lat.p99_ms:7.2f} ms  "
            f"spread {lat.spread:.2f}{'  NOISY' if lat.noisy else ''}  ({time.perf_counter() - t0:.0f} s)")
    return rows


def _from_csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise ConfigError(path, "-", "no measurements to refit; run `python -m search bench latency` first")
    rows = []
    for r in pd.read_csv(path).to_dict("records"):
        layers, heads, ffn = int(r["layers"]), int(r["heads"]), int(r["ffn"])
        shape = bench_shape(layers, int(r["hidden"]), heads, ffn)
        group = r["group_size"]
        group = None if pd.isna(group) else group if group == CHANNEL else int(float(group))
        quant = QuantParams(int(r["bits"]), group, r["activations"])
        rows.append({**{k: r[k] for k in ("candidate", "measured_p50_ms", "measured_p99_ms", "spread", "noisy")},
                     "shape": shape, "quant": quant})
    return rows


def evaluate(rows: list[dict], target: Target, seed: int, folds: int = 8):
    """k-fold cross-validation: every candidate is predicted by factors fitted on the other folds, so
    every reported error is out-of-sample. The saved calibration is then fitted on all of them."""
    wl, dev = target.workload, target.device
    cases = [{"shape": r["shape"], "quant": r["quant"], "batch": wl.batch_size, "seq": wl.sequence_length}
             for r in rows]
    fold_of = np.random.default_rng(seed).permutation(len(rows)) % folds
    usable = [i for i, r in enumerate(rows) if not r["noisy"]]  # a noisy measurement never trains the model
    for k in range(folds):
        train = [i for i in usable if fold_of[i] != k]
        fitted_k = calibrate.fit([cases[i] for i in train], [rows[i]["measured_p50_ms"] for i in train], dev)
        for i in np.flatnonzero(fold_of == k):
            rows[i]["predicted_p50_ms"] = roofline.estimate(rows[i]["shape"], rows[i]["quant"], fitted_k,
                                                            wl.batch_size, wl.sequence_length).p50_ms
    fitted = calibrate.fit([cases[i] for i in usable], [rows[i]["measured_p50_ms"] for i in usable], dev)
    for i, r in enumerate(rows):
        r["fold"] = int(fold_of[i])
        r["predicted_p50_uncalibrated_ms"] = roofline.estimate(r["shape"], r["quant"], dev, wl.batch_size,
                                                               wl.sequence_length).p50_ms
        r["error_pct"] = 100 * (r["predicted_p50_ms"] / r["measured_p50_ms"] - 1)
        s, q = r["shape"], r["quant"]
        r.update(layers=s.layers, hidden=s.hidden, heads=s.heads[0], ffn=s.ffn[0], bits=q.bits,
                 group_size=q.group_size, activations=q.activations)
    frame = pd.DataFrame([{k: v for k, v in r.items() if k not in ("shape", "quant")} for r in rows])
    errors = frame["error_pct"].abs()
    uncalibrated = (100 * (frame["predicted_p50_uncalibrated_ms"] / frame["measured_p50_ms"] - 1)).abs()
    summary = {"target": target.name, "candidates": len(frame), "fitted_on": len(usable), "folds": folds,
               "within_15pct": float((errors <= 100 * TOLERANCE).mean()),
               "median_abs_error_pct": float(errors.median()),
               # how much slower than predicted a run may be, out-of-sample like the rest: an estimated latency's
               # upper bound is the estimate x (1 + this / 100) (confidence.py)
               "slowdown_pct_q95": max(0.0, float((100 * (frame["measured_p50_ms"] / frame["predicted_p50_ms"] - 1))
                                                  .quantile(0.95))),
               "uncalibrated_median_abs_error_pct": float(uncalibrated.median())}
    return frame, summary, fitted


def _markdown(frame: pd.DataFrame, summary: dict, calibration: dict) -> str:
    lines = [f"# Latency predictor vs measurement ({summary['target']})", "",
             f"{summary['candidates']} artifacts measured (fresh process, onnxruntime CPU). Predictions are "
             f"{summary['folds']}-fold cross-validated: each candidate is predicted by roofline factors fitted on "
             f"the other folds, never on itself. The saved calibration is fitted on all "
             f"{summary['fitted_on']} steady measurements.", "",
             f"- within ±15% (out-of-sample): **{100 * summary['within_15pct']:.0f}%** of candidates "
             f"(median |error| {summary['median_abs_error_pct']:.1f}%)",
             f"- before calibration (assumed factors): median |error| "
             f"{summary['uncalibrated_median_abs_error_pct']:.0f}%",
             f"- fitted: compute efficiency {json.dumps({k: round(v, 3) for k, v in calibration['compute_efficiency'].items()})}, "
             f"bandwidth efficiency {calibration['bandwidth_efficiency']:.3f}, per-op overhead us "
             f"{json.dumps({k: round(v, 1) for k, v in calibration['op_overhead_us'].items()})}, per-run overhead us "
             f"{json.dumps({k: round(v) for k, v in calibration['run_overhead_us'].items()})}, per weight block ns "
             f"{json.dumps({k: round(v, 2) for k, v in calibration['block_cost_ns'].items()})}",
             "", "| candidate | fold | predicted p50 ms | measured p50 ms | measured p99 ms | spread | error % |",
             "|---|---|---|---|---|---|---|"]
    for _, r in frame.iterrows():
        lines.append(f"| {r['candidate']} | {r['fold']} | {r['predicted_p50_ms']:.2f} | {r['measured_p50_ms']:.2f} | "
                     f"{r['measured_p99_ms']:.2f} | {r['spread']:.2f}{' noisy' if r['noisy'] else ''} | "
                     f"{r['error_pct']:+.1f} |")
    return "\n".join(lines) + "\n"

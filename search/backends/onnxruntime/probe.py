"""Latency and peak memory of an ONNX artifact, measured in the process that runs this file.

Standalone on purpose (stdlib + numpy + onnxruntime only): the same file runs here in a fresh
subprocess and, copied over ssh, on a remote device. Prints one JSON object.
usage: python probe.py MODEL BATCH SEQ THREADS INPUTS_JSON [ROUNDS RUNS_PER_ROUND]
INPUTS_JSON: [[name, fill, high, dims, dtype], ...]: each model input of a random batch, as the model family
describes it (families/base.py InputSpec, dims already resolved for the workload): fill "ids" (integers in
[1, high)), "ones" or "normal" (N(0, 1)), e.g. token ids [batch, seq] int64 or pixels [batch, 3, H, W] float32.
BATCH and SEQ (the workload's) are reported back with the timings; the dims say the shapes.
"""
import hashlib
import json
import sys
import time

import numpy as np
import onnxruntime as ort

MAX_SPREAD = 0.15  # per-round medians further apart than this (relative) mean the host was busy
ATTEMPTS = 3


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024  # kB
    return float("nan")


def rss_mb() -> float:
    return _status_mb("VmRSS:")


def peak_rss_mb() -> float:
    # VmHWM, not getrusage's ru_maxrss: that one survives exec and reports the forking parent's peak
    return _status_mb("VmHWM:")


def _sha256(path: str) -> str:
    """Of the file that was measured: the caller checks it is the artifact it sent."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def rounds_of(sess, feed, rounds: int, runs: int) -> list:
    out = []
    for _ in range(rounds):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append((time.perf_counter() - t0) * 1e3)
        out.append(times)
    return out


def fill_input(rng, fill: str, high: int, dims: list, dtype: str) -> np.ndarray:
    if fill == "ids":
        return rng.integers(1, high, dims).astype(dtype)
    if fill == "ones":
        return np.ones(dims, dtype=dtype)
    if fill == "normal":
        return rng.standard_normal(dims).astype(dtype)
    raise SystemExit(f"probe.py: unknown fill {fill!r} for an input (ids, ones, normal)")


def probe(model: str, batch: int, seq: int, threads: int, inputs: list, rounds: int = 5, runs: int = 40,
          warmup: int = 10) -> dict:
    baseline = rss_mb()  # interpreter + onnxruntime loaded, no model yet
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-wait on a shared host
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {name: fill_input(rng, fill, high, dims, dtype) for name, fill, high, dims, dtype in inputs}
    for _ in range(warmup):
        sess.run(None, feed)
    best = None
    for attempt in range(ATTEMPTS):  # a noisy attempt is measured again; the steadiest one is kept
        per_round = rounds_of(sess, feed, rounds, runs)
        medians = [float(np.median(r)) for r in per_round]
        times = [t for r in per_round for t in r]
        p50 = float(np.median(times))
        spread = (max(medians) - min(medians)) / p50
        if best is None or spread < best["spread"]:
            best = {"p50_ms": p50, "p99_ms": float(np.percentile(times, 99)), "spread": spread,
                    "round_p50_ms": medians, "attempts": attempt + 1, "times_ms": [round(t, 5) for t in times]}
        if spread <= MAX_SPREAD:
            break
    best.update(noisy=best["spread"] > MAX_SPREAD, max_spread=MAX_SPREAD, peak_rss_mb=peak_rss_mb() - baseline,
                baseline_rss_mb=baseline, threads=threads, batch=batch, sequence_length=seq, rounds=rounds,
                runs_per_round=runs, warmup=warmup, runtime=f"onnxruntime {ort.__version__}", model_sha256=_sha256(model))
    return best


if __name__ == "__main__":
    args = sys.argv[1:]
    extra = [int(a) for a in args[5:7]]
    print(json.dumps(probe(args[0], *(int(a) for a in args[1:4]), json.loads(args[4]), *extra)))

"""Latency: measured p50/p99 of the artifact on this machine, with the spread kept beside it."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .accuracy import session


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p99_ms: float
    spread: float  # (max - min) / median of the per-round p50s; high means a noisy measurement
    source: str  # "measured" or "estimated"
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def measure(path: Path, batch_size: int, sequence_length: int, threads: int, vocab_size: int, rounds: int = 5,
            runs_per_round: int = 40, warmup: int = 10, seed: int = 0) -> Latency:
    """Warm-up, then several rounds; p50 is the median of all runs, p99 their 99th percentile."""
    sess = session(path, threads)
    rng = np.random.default_rng(seed)
    feed = {"input_ids": rng.integers(1, vocab_size, (batch_size, sequence_length), dtype=np.int64),
            "attention_mask": np.ones((batch_size, sequence_length), dtype=np.int64)}
    for _ in range(warmup):
        sess.run(["logits"], feed)
    times, round_p50 = [], []
    for _ in range(rounds):
        this = []
        for _ in range(runs_per_round):
            t0 = time.perf_counter()
            sess.run(["logits"], feed)
            this.append((time.perf_counter() - t0) * 1e3)
        times += this
        round_p50.append(float(np.median(this)))
    p50 = float(np.median(times))
    return Latency(p50_ms=p50, p99_ms=float(np.percentile(times, 99)),
                   spread=float((max(round_p50) - min(round_p50)) / p50), source="measured",
                   detail=f"onnxruntime CPU, {threads} thread(s), {rounds}x{runs_per_round} runs after {warmup} warm-up")

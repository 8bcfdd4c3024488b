"""Re-measure an artifact's latency in a fresh process with more runs (before shipping it).

`python -m search.measure.remeasure MODEL BATCH SEQ THREADS VOCAB` prints the Latency as JSON.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .latency import Latency

ROUNDS, RUNS_PER_ROUND = 10, 50


def remeasure(path: Path, batch_size: int, sequence_length: int, threads: int, vocab_size: int) -> Latency:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "search.measure.remeasure", str(path), str(batch_size),
                           str(sequence_length), str(threads), str(vocab_size)], capture_output=True, text=True,
                          env=env, timeout=1800, check=True)
    return Latency(**json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str]) -> None:
    from .latency import measure

    path, batch, seq, threads, vocab = argv
    lat = measure(Path(path), int(batch), int(seq), int(threads), int(vocab), rounds=ROUNDS,
                  runs_per_round=RUNS_PER_ROUND, seed=1)
    lat = Latency(**{**lat.as_dict(), "detail": lat.detail + " (re-measured in a fresh process)"})
    print(json.dumps(lat.as_dict()))


if __name__ == "__main__":
    main(sys.argv[1:])

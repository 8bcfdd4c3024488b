"""`python -m search bench stability`: does a measurement repeat, quiet and while another process
loads the machine? Writes results/bench/stability.{csv,md}."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from .. import backends
from ..candidate import QuantParams
from ..target import Target
from . import summary
from .latency import bench_shape, build

TOLERANCE = 0.10  # stated: repeated p50s within +/-10% of their median
REPEATS = 5
HOG = "import time\nwhile True:\n    sum(i * i for i in range(10000))\n"  # one busy core, like a neighbour


def run(target: Target, out_dir: Path, log=print) -> pd.DataFrame:
    wl, dev = target.workload, target.device
    shape = bench_shape(4, 256, 8, 1024)
    backend = backends.get(dev.runtime)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = backend.build(build(shape, 0), QuantParams(8, None, "dynamic_int8"), out_dir / "stability")
    rows = []
    for condition in ("quiet", "loaded"):
        hog = subprocess.Popen([sys.executable, "-c", HOG]) if condition == "loaded" else None
        try:
            time.sleep(1.0 if hog else 0)
            for i in range(REPEATS):
                lat = backend.measure_latency(path, shape, wl.batch_size, wl.sequence_length, dev.threads,
                                              runner=dev.runner)
                rows.append({"condition": condition, "repeat": i, "p50_ms": lat.p50_ms, "p99_ms": lat.p99_ms,
                             "spread": lat.spread, "noisy": lat.noisy})
                log(f"{condition:6s} #{i}: p50 {lat.p50_ms:.3f} ms  p99 {lat.p99_ms:.3f} ms  spread {lat.spread:.3f}")
        finally:
            if hog:
                hog.kill()
                hog.wait()
    frame = pd.DataFrame(rows)
    frame["deviation_pct"] = 100 * (frame["p50_ms"] / frame.groupby("condition")["p50_ms"].transform("median") - 1)
    frame.to_csv(out_dir / "stability.csv", index=False)
    lines = [f"# Repeated measurements of one artifact ({target.name}, {dev.threads} thread(s))", "",
             f"L4 h256 int8 student shape, batch {wl.batch_size}, sequence {wl.sequence_length}; each repeat is a "
             f"fresh process. Stated tolerance: every p50 within ±{100 * TOLERANCE:.0f}% of the median of its "
             "condition. `loaded`: a second process keeps one core busy throughout.", "",
             "| condition | p50 median ms | max deviation % | within tolerance | p99 median ms |", "|---|---|---|---|---|"]
    for condition, g in frame.groupby("condition", sort=False):
        worst = float(g["deviation_pct"].abs().max())
        lines.append(f"| {condition} | {g['p50_ms'].median():.3f} | {worst:.1f} | "
                     f"{'yes' if worst <= 100 * TOLERANCE else 'NO'} | {g['p99_ms'].median():.3f} |")
    loaded, quiet = (frame[frame.condition == c]["p50_ms"].median() for c in ("loaded", "quiet"))
    lines += ["", f"Loaded / quiet median p50: {loaded / quiet:.2f}x."]
    summary.write(out_dir / "stability.md", "\n".join(lines) + "\n", dev.threads)
    log("\n".join(lines))
    return frame



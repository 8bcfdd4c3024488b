"""Measured latency and peak memory: the artifact runs in a fresh process, here or on a device over ssh."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import CandidateError

PROBE = Path(__file__).with_name("probe.py")


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p99_ms: float
    spread: float  # (max - min) / median of the per-round p50s; high means a noisy measurement
    source: str  # "measured" or "estimated"
    detail: str = ""
    noisy: bool = False  # still above the probe's spread limit after its retries: flagged, not trusted
    peak_rss_mb: float | None = None  # peak resident memory over the process baseline, measured only

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Runner:
    """How to reach a device: a command prefix (e.g. `ssh -p 22 user@orin`), its python, a work folder."""

    command: str
    python: str = "python3"
    workdir: str = "/tmp/search-probe"


def _remote(runner: Runner, shell: str, stdin=None, timeout: float = 600) -> str:
    proc = subprocess.run(shlex.split(runner.command) + [shell], stdin=stdin, capture_output=True, text=stdin is None,
                          timeout=timeout)
    if proc.returncode != 0:
        err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode(errors="replace")
        raise CandidateError(f"runner `{runner.command}` failed ({proc.returncode}): {err.strip()[-300:]}")
    return proc.stdout if isinstance(proc.stdout, str) else proc.stdout.decode()


def measure(path: Path, batch_size: int, sequence_length: int, threads: int, vocab_size: int, rounds: int = 5,
            runs_per_round: int = 40, runner: Runner | None = None) -> Latency:
    """Run probe.py on the artifact in a fresh process (here, or on the runner's device)."""
    args = [str(batch_size), str(sequence_length), str(threads), str(vocab_size), str(rounds), str(runs_per_round)]
    if runner is None:
        proc = subprocess.run([sys.executable, str(PROBE), str(path), *args], capture_output=True, text=True,
                              timeout=1800)
        if proc.returncode != 0:
            raise CandidateError(f"measuring {path.name} failed: {proc.stderr.strip()[-300:]}")
        out, where = proc.stdout, "this machine"
    else:
        w = shlex.quote(runner.workdir)
        for local, name in ((path, "model.onnx"), (PROBE, "probe.py")):  # copied through the same command
            with open(local, "rb") as f:
                _remote(runner, f"mkdir -p {w} && cat > {w}/{name}", stdin=f)
        out = _remote(runner, f"{shlex.quote(runner.python)} {w}/probe.py {w}/model.onnx {' '.join(args)}")
        where = f"`{runner.command}`"
    r = json.loads(out.strip().splitlines()[-1])
    detail = (f"onnxruntime {r['onnxruntime']} CPU on {where}, fresh process, {r['threads']} thread(s), "
              f"{r['rounds']}x{r['runs_per_round']} runs after {r['warmup']} warm-up, attempt {r['attempts']}")
    return Latency(p50_ms=r["p50_ms"], p99_ms=r["p99_ms"], spread=r["spread"], source="measured", detail=detail,
                   noisy=r["noisy"], peak_rss_mb=r["peak_rss_mb"])

"""Measured latency and peak memory: a backend's probe runs the artifact in a fresh process, here or on a
device over ssh; this module moves the files and reads the probe's one-line JSON answer."""
from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import CandidateError


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p99_ms: float
    spread: float  # (max - min) / median of the per-round p50s; high means a noisy measurement
    source: str  # "measured" or "estimated"
    detail: str = ""
    noisy: bool = False  # still above the probe's spread limit after its retries: flagged, not trusted
    peak_rss_mb: float | None = None  # peak resident memory over the process baseline, measured only
    times_ms: tuple = ()  # every timed run of the kept attempt, measured only (the p99's confidence bound)

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


def run_probe(probe: Path, artifact: Path, args: list[str], runner: Runner | None = None) -> tuple[dict, str]:
    """Run `probe` (a standalone script) on `artifact` in a fresh process, here or on the runner's device;
    returns its JSON answer and where it ran. Remote files keep their own names."""
    if runner is None:
        proc = subprocess.run([sys.executable, str(probe), str(artifact), *args], capture_output=True, text=True,
                              timeout=1800)
        if proc.returncode != 0:
            raise CandidateError(f"measuring {artifact.name} failed: {proc.stderr.strip()[-300:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1]), "this machine"
    # a folder of its own per measurement: two workers using one device never overwrite each other's files
    w = shlex.quote(f"{runner.workdir.rstrip('/')}/{uuid.uuid4().hex}")
    try:
        for local in (artifact, probe):  # copied through the same command
            with open(local, "rb") as f:
                _remote(runner, f"mkdir -p {w} && cat > {w}/{shlex.quote(local.name)}", stdin=f)
        out = _remote(runner, f"{shlex.quote(runner.python)} {w}/{shlex.quote(probe.name)} "
                              f"{w}/{shlex.quote(artifact.name)} {' '.join(shlex.quote(a) for a in args)}")
    finally:
        with contextlib.suppress(CandidateError, subprocess.SubprocessError, OSError):
            _remote(runner, f"rm -rf {w}", timeout=60)
    return json.loads(out.strip().splitlines()[-1]), f"`{runner.command}`"


def from_probe(r: dict, where: str, artifact: Path | None = None) -> Latency:
    from ..tasks.teacher import file_sha256

    if artifact is not None and r.get("model_sha256") not in (None, file_sha256(artifact)):
        raise CandidateError(f"the probe on {where} measured another file than {artifact.name} (checksum differs)")
    detail = (f"{r['runtime']} CPU on {where}, fresh process, {r['threads']} thread(s), "
              f"{r['rounds']}x{r['runs_per_round']} runs after {r['warmup']} warm-up, attempt {r['attempts']}")
    return Latency(p50_ms=r["p50_ms"], p99_ms=r["p99_ms"], spread=r["spread"], source="measured", detail=detail,
                   noisy=r["noisy"], peak_rss_mb=r["peak_rss_mb"], times_ms=tuple(r.get("times_ms", ())))

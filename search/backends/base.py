"""The runtime-backend seam: what a runtime can run, what its artifact costs, how to build and run it.

Contract of `Backend` (every runtime implements it; the core asks nothing else of a runtime):
- `name` is the target files' `device.runtime`; `artifact_name` the file a candidate ships as.
- `weight_bytes` measures the bytes of every stored weight in an artifact (exact, from the file).
- `remeasure` measures a stored artifact again in a fresh process (here, or on a runner's device), with more rounds
  than the search's own measurement, at the workload the run saved (budget.json): before a candidate ships
  (outputs.select_confirmed). It returns the resource metrics under their objective names (objectives.py), the
  latency objective's one-sided upper bound `<name>_upper` with `latency_bound_method`, whether the timing was too
  noisy to trust, and how it was measured.
- `usage` is a code snippet for DEPLOY.md that runs the shipped artifact.
- A backend holds no per-run state; one instance serves every trial; it names no model family (it asks the model's
  shape which family it is, or is handed what the family writes).

`ModelBackend` adds what a flow that builds its artifact from a torch model with `QuantParams` asks (the
classifiers' flow; onnxruntime):
- `check` says, before any training, why a recipe cannot run on this runtime (an empty list: it can).
- `predicted_weight_bytes` prices a shape's tensors (from its family) exactly as `build` will store them;
  tests hold the two within a few percent.
- `build` takes the trained torch model and writes one artifact file into `workdir` (its name is
  `artifact_name`); quantization codes are computed in torch (compress/) and only written in the
  runtime's layout here, so what was calibrated or trained is what ships. It raises CandidateError
  for a recipe the runtime refuses.
- `outputs` runs the artifact over a split and returns the task-level outputs as numpy.
- `measure_latency` runs the artifact in a fresh process (here, or on a runner's device) and never
  in the calling process, so its memory and threads cannot leak into the measurement.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..candidate import QuantParams
from ..families.base import ModelShape


class Backend(ABC):
    name: str = ""
    artifact_name: str = ""

    @abstractmethod
    def weight_bytes(self, artifact: Path) -> int:
        """Bytes of every stored weight in the artifact (measured, exact)."""

    @abstractmethod
    def remeasure(self, artifact: Path, saved: dict, runner, confidence: float) -> tuple[dict, bool, str]:
        """(resource metrics and the latency bound, too noisy to trust, how it was measured)."""

    @abstractmethod
    def usage(self, saved: dict) -> str:
        """A code snippet for DEPLOY.md that runs the shipped artifact (`saved`: the run's budget.json)."""


class ModelBackend(Backend):
    @abstractmethod
    def check(self, shape: ModelShape, quant: QuantParams) -> list[str]: ...

    @abstractmethod
    def predicted_weight_bytes(self, shape: ModelShape, quant: QuantParams) -> int: ...

    @abstractmethod
    def build(self, model, quant: QuantParams, workdir: Path, calibration: dict | None = None) -> Path: ...

    @abstractmethod
    def outputs(self, artifact: Path, data, threads: int, batch_size: int = 64) -> np.ndarray: ...

    @abstractmethod
    def measure_latency(self, artifact: Path, shape: ModelShape, batch: int, seq: int, threads: int,
                        runner=None, rounds: int = 5, runs_per_round: int = 40): ...

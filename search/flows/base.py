"""The task-kind seam: what the run engine (study.py) asks of a kind of task, and nothing more.

A flow is one kind of task end to end (text classification shipped as ONNX, a causal language model shipped as
GGUF, ...): its recipe and space, its run context, how a recipe is screened, built and measured. The engine runs any
registered flow without knowing which (no kind checks outside `flows/`); a new kind is one folder here and one
`register` line.

Contract (in the manner of Optuna's `BaseSampler` / `BaseStorage`):
- Its inputs.py (light: nothing heavy is imported) gives `RUNTIMES` (what its targets run on), `read_workload`
  and `read_budget` (a target file's sections, for target.py), `BUILTIN_TASKS` (names `--task` may give; the first
  is the default), `DEFAULT_SPACE`, `load_task`, `load_space`, and `check(task, space, target)`, which refuses bad
  input before anything is loaded and returns what `prepare` reuses; `DESCRIPTION`, `TASK_HINT` and
  `EXAMPLE_TARGET` word the refusal of a target of another kind. `prepare` then loads the teacher and the data
  (cached across runs).
- What the engine and the outputs read of the objects a flow hands them: a recipe is a frozen dataclass with
  `label()`; a space has `suggest(trial, ctx.limits)` (the only `trial.suggest_*` calls), `promote` and `exploit`
  (rungs.Promotion, exploit.Exploit: off unless the flow implements `more_training` and `variants`) and `path`;
  the prepared task has `task.source`, `family.name` and `family.shape_of(teacher)` (a dataclass);
  `run_inputs` returns at least `classes` (None where the task has none).
- A flow object holds no per-run state; one instance serves every run and trial. What a run shares lives in the
  context `prepare_run` returns; the engine passes it back to every other call and never looks inside it beyond
  `ctx.family`, `ctx.backend`, `ctx.task_type` and `ctx.limits` (for its log line and `space.suggest`).
- `prepare_run` checks the space against the teacher and refuses (ConfigError) a budget that no recipe of the
  space can meet, from shapes alone, before any training; then measures what every trial shares (cached).
- `resolve` writes a sampled recipe as it builds: two recipes that build the same model resolve equal (the engine
  de-duplicates by the resolved recipe and reuses the earlier trial's measurements).
- `screen` predicts, from the recipe alone and in microseconds, `predicted_<objective>` (and
  `predicted_<objective>_upper` where it bounds it) for the resource objectives it can price, and the reasons it
  misses the budget; a recipe with reasons is never built. `screening.predicted_violations` turns the predictions
  into the sampler's constraints: a flow writes no budget logic of its own.
- `run_candidate` builds the recipe into `workdir` and measures the artifact that would ship: a dict of metrics
  with every objective of the run's budget (objectives.py), `latency_source` ("measured" or "estimated"), the
  latency bound `<latency objective>_upper` with `latency_bound_method`, and `artifact` (the file's path). It
  raises CandidateError for a recipe that cannot be built (the trial fails with that reason; the run goes on).
  With `more` (from `more_training`), the recipe's student is trained further first (a second rung).
- `measure_teacher` measures the uncompressed teacher's artifact exactly as `run_candidate` measures a
  candidate's, into `workdir`.
- What a run leaves (outputs.py, export.py, replan.py ask the flow of a run's saved budget, `flows.of_budget`):
  `METRIC_COLUMNS` (trials.csv's metric columns), `SUMMARY_KEYS` (what selected.json shows of the teacher and the
  selection), `resolved_budget` (the target's budget with its quality limit as an absolute number, naming the
  objectives and the flow), `metrics_text` (one trial's metrics in a log line), `run_inputs` (what `select`,
  `export` and `replan` need later without preparing the task again: extra budget.json keys, and evidence files),
  `workload_inputs` (the target's workload as budget.json keeps it: what a re-measurement runs), `reprice` (a
  stored trial's or the teacher's resource metrics on another target, for `replan`: no training; None where this
  kind cannot be re-priced).
- Optional steps, default no-ops: `warm_start` (the study's first recipes), `more_training` (None: one rung),
  `variants` (none), `as_built` (stored recipes need no upgrade), `solved_for_target` (no recipe depends on the
  target beyond its parameters).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Start:
    """A warm-start recipe: its parameters (a trial's params, as the space names them) and the user attrs its trial
    is queued with (what it is: `warm_start`, and a flow's bracket marks, read by rungs.py and exploit.py)."""

    params: dict
    attrs: dict = field(default_factory=lambda: {"warm_start": True})


class Flow(ABC):
    NAME: str = ""  # the task type it runs (a task file's `task_type`), and its registry key
    METRIC_COLUMNS: tuple = ()  # trials.csv's metric columns (trial user attrs), in order
    SUMMARY_KEYS: tuple = ()  # of the teacher and the selected trial, in selected.json and the summary table
    TOKENIZED: bool = False  # its runs keep the task's tokenizer in RUN/tokenizer/ (run_inputs writes it)

    @abstractmethod
    def resolved_budget(self, target, teacher: dict) -> dict:
        """The budget as the run's objectives name it (objectives.py): `quality`, `latency` (where it is not one
        inference's p99), each limit under its objective's budget key, the confidence level, and `flow` (NAME)."""

    @abstractmethod
    def metrics_text(self, m: dict, source: str) -> str:
        """One trial's (or the teacher's) metrics in a log line; `source` notes an estimated or noisy latency."""

    @abstractmethod
    def run_inputs(self, rd, prepared, target) -> dict:
        """Keys budget.json adds for this kind (classes, workload, how quality was measured), after writing any
        evidence `select` needs (the validation labels of the accuracy bound) into the run folder `rd`."""

    @abstractmethod
    def prepare(self, task, cache_dir: Path, log, checked):
        """The teacher and the data ready to train and measure against (cached under `cache_dir` across runs):
        the task as the kind's inputs.py loaded it, and what its `check` returned."""

    @abstractmethod
    def prepare_run(self, prepared, target, space, cache_dir: Path, threads: int, seed: int, log=print):
        """The run's context (see the module's contract); ConfigError for a space or budget that cannot work."""

    @abstractmethod
    def resolve(self, ctx, recipe):
        """The recipe as it builds (hashable, a dataclass: the engine stores `asdict` of it)."""

    @abstractmethod
    def screen(self, ctx, recipe) -> tuple[dict, list[str]]:
        """(predicted values, reasons to reject before training)."""

    @abstractmethod
    def run_candidate(self, ctx, recipe, workdir: Path, log=print, more=None) -> dict:
        """Build and measure one candidate; CandidateError when it cannot be built."""

    @abstractmethod
    def measure_teacher(self, ctx, workdir: Path) -> dict:
        """The teacher's artifact, measured like a candidate's."""

    @abstractmethod
    def workload_inputs(self, target) -> dict:
        """The target's workload under the budget.json keys the backend's `remeasure` reads."""

    def reprice(self, attrs: dict, saved: dict, target, artifact: Path, locks: Path) -> dict | None:
        """A stored trial's (`attrs`: its user attrs) or the teacher's (`attrs` without a `recipe`) resource metrics
        on `target`: estimated from what was stored, or `artifact` measured there (one measurement per host at a
        time: `locks`). `saved`: the source run's budget.json. None: this kind cannot be re-priced."""
        return None

    def warm_start(self, ctx, trials: int) -> list[Start]:
        """The first recipes of a new study (screened within the budget), before the sampler's own; none by default."""
        return []

    def more_training(self, ctx):
        """What a promoted trial's second rung trains (rungs.py); None: the run has one rung."""
        return None

    def variants(self, ctx, parent_params: dict, taken: set, n: int, seed: int) -> list[dict]:
        """Up to n cheap variants of a front trial's recipe (exploit.py), none of them in `taken`; none by default."""
        return []

    def as_built(self, recipe: dict | None) -> dict | None:
        """A stored recipe (its JSON form) in today's terms, so a resumed run recognises its own trials."""
        return recipe

    def solved_for_target(self, recipe: dict) -> bool:
        """Whether what this recipe builds is solved for the target and budget (a per-layer precision solver), so
        that a trial carried over from another target by a replan is not the same model."""
        return False


def slice_budget(quality, teacher: dict, resolve) -> dict:
    """The resolved budget's `slices`: each slice's limit of the quality objective. `resolve(slice, teacher's value
    on that slice) -> limit`: a floor relative to the teacher is relative to the teacher on that slice. Empty where
    the task names no slices."""
    from ..objectives import slice_values

    values = slice_values(teacher, quality.name)
    return {"slices": {name: round(float(resolve(name, v)), 6) for name, v in values.items()}} if values else {}

"""The run engine: ask a recipe per trial, screen it, build and measure it, record everything, for any kind of task
(a flow, flows/base.py: the engine never asks which).

The only module besides space.py that talks to Optuna. Every trial's outcome is in study.db the
moment it ends; trials.csv and pareto.csv are rewritten after each trial, so a crash loses nothing.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from dataclasses import replace as dataclass_replace
from pathlib import Path

import optuna
from safetensors import SafetensorError
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from . import accel, exploit, outputs, pareto, rungs
from .errors import CandidateError, RunStopped
from .objectives import for_budget
from . import storage as storages
from .flows.base import Flow, Start
from .locks import file_lock
from .screening import predicted_violations
from .run_dir import RunDir, atomic_replace_dir, atomic_write_json, link_copy, read_json
from .space import Space
from .strategies import OURS, STARTUP_TRIALS
from .target import Target


@dataclass(frozen=True)
class RunSettings:
    trials: int  # completed trials to reach (over every worker of the run)
    timeout_s: float | None
    seed: int
    threads: int
    storage: str | None = None  # None: SQLite in the run folder; else a shared storage URL (storage.py)
    worker_id: int = 0  # each worker's sampler is seeded with seed + worker_id
    join: bool = False  # a worker joining a run another process started
    strategy: str = OURS  # strategies.py: this project's search, or a baseline `bench search` compares it with


class Withdrawn(Exception):
    """A queued variant not worth building any more (exploit.withdrawn): the trial ends failed, with its reason."""


def _withdrawn(study, parent: int, budget: dict) -> str | None:
    complete = {t.number: (exploit.student_params(_params_of(t)), t.user_attrs)
                for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    return exploit.withdrawn(parent, complete, budget) if parent in complete else None


BRACKETS = {"largest_admitted": "the largest student the budget admits",  # a warm-start trial's attr -> what it is
            "compact_admitted": "the compact form of the largest student the budget admits",
            "narrow_admitted": "that compact form at the space's least width (the narrow end)"}


def _is_end(attrs: dict) -> bool:
    return "compact_admitted" in attrs or "narrow_admitted" in attrs


def _bracket(attrs: dict) -> str | None:
    return next((what for key, what in BRACKETS.items() if attrs.get(key)), None)


class _QuietExpectedFailures(logging.Filter):
    """Optuna logs a caught trial failure with its traceback, then "failed with value None"; ours are expected
    outcomes (a recipe that cannot build, a withdrawn variant) whose one-line reason the run's log already gives.
    (An uncaught error is still logged whole: it ends the run.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (CandidateError, Withdrawn)):
            return False
        message = record.getMessage()
        return not (message.startswith("Trial ") and message.endswith(" failed with value None."))


_QUIET = _QuietExpectedFailures()


def _sampler(settings: RunSettings, seed: int, trials: int):
    if settings.strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.strategy == "nsga2":
        # a generation of STARTUP_TRIALS (the start-up our TPE gets), not Optuna's 50: in a run of a few dozen
        # trials a 50-strong first generation is all random sampling, and NSGA-II would never select or breed
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=STARTUP_TRIALS)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                      n_startup_trials=min(STARTUP_TRIALS, trials), constant_liar=True)


def _completed_with_recipe(study, recipe: dict, number: int, flow: Flow):
    """An earlier trial with this recipe, once it has finished (a running one, another worker's, is waited for:
    two workers never build the same student at the same time). A per-layer precision solved for another target
    or budget (a trial a replan carried over) is not the model this recipe builds here: the solver would allocate
    again, so it is not reused."""
    recipe = flow.as_built(recipe)
    solver = flow.solved_for_target(recipe)
    solved_here = lambda t: not (solver and "replan_of_trial" in t.user_attrs)  # noqa: E731
    while True:
        same = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                if t.number < number and flow.as_built(t.user_attrs.get("recipe")) == recipe and solved_here(t)]
        done = [t for t in same if t.state == TrialState.COMPLETE]
        if done or not same:
            return done[0] if done else None
        time.sleep(1.0)
        optuna.storages.fail_stale_trials(study)


def _claim(study, trial, target: int, poll_s: float = 1.0) -> bool:
    """Whether this trial is needed for exactly `target` completed trials: trials numbered before it that
    completed or are still running come first; while those might still fail, wait for them."""
    while True:
        ahead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                 if t.number < trial.number]
        complete = sum(t.state == TrialState.COMPLETE for t in ahead)
        if complete >= target:
            return False
        if len(ahead) < target:
            return True
        time.sleep(poll_s)
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial must not hold this one forever


def _fail_dead_trials(study, log) -> None:
    """A trial still RUNNING when its run is resumed belonged to a process that died (one process per run
    here; many workers will need Optuna's heartbeat instead): mark it FAIL, with the reason."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = "its process died mid-trial (found RUNNING on --resume)"
        study._storage.set_trial_user_attr(t._trial_id, "reason", reason)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        retry = "retry_of" not in t.user_attrs  # its recipe is tried once more, not forever
        if retry:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
        log(f"trial {t.number}: marked FAIL: {reason}" + ("; its recipe is tried again" if retry else ""))


def _params_of(trial) -> dict:
    """A trial's recipe parameters: as sampled, or, while it waits in the queue, as it was enqueued."""
    return dict(trial.params) or dict(trial.system_attrs.get("fixed_params", {}))


def _recipes_taken(study, flow: Flow, ctx, space) -> set:
    """The resolved recipes of every trial the run has, in any state (queued ones too), so that variants repeat
    none of them. A trial whose parameters the space no longer resolves (another space, a trial cut short while
    sampling) is left out: at worst a variant repeats it and is reused, not trained again."""
    taken = set()
    for t in study.get_trials(deepcopy=False):
        params = _params_of(t)
        if not params:
            continue
        try:
            taken.add(flow.resolve(ctx, space.suggest(optuna.trial.FixedTrial(params), ctx.limits)))
        except (ValueError, KeyError):
            continue
    return taken


class Engine:
    """One process's share of a run: the study, the flow's context and the budget, and the steps of a trial.
    `run` below makes one and drives it; each method is one step (ask -> reuse or screen -> build -> rung ->
    variants), so no step reaches into another's locals."""

    def __init__(self, flow: Flow, target: Target, space: Space, prepared, run_dir: Path, settings: RunSettings,
                 resume: bool, log=print):
        self.flow, self.target, self.settings, self.resume, self.log = flow, target, settings, resume, log
        self.rd = RunDir(run_dir)
        self.cache_dir = run_dir.parent / "cache"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.ours = settings.strategy == OURS
        if not self.ours and getattr(space, "promote", None) is not None:  # a baseline: one rung, no rows held out
            space = dataclass_replace(space, promote=rungs.Promotion())
        self.space = space
        self.ctx = flow.prepare_run(prepared, target, space, self.cache_dir, settings.threads, settings.seed, log=log)
        log(f"model family {prepared.family.name}, task type {self.ctx.task_type.NAME}, runtime "
            f"{self.ctx.backend.name}; training on {accel.describe()}")
        self.teacher = self._teacher()
        self.budget = flow.resolved_budget(target, self.teacher)
        outputs.save_run_inputs(self.rd, prepared, self.budget, target, self.ctx.backend)
        log(outputs.metrics_line("teacher", self.teacher, self.budget) + f"  | budget: {outputs.budget_line(self.budget)}")
        self.objectives = for_budget(self.budget)
        self.quality = self.objectives[0]
        self.more = flow.more_training(self.ctx)
        self.exploiting = self.ours and space.exploit.on
        self.pending: list[Start] = []  # warm-start recipes not yet queued (only while variants may be queued)
        self.ends = False  # whether the warm start has brackets (ends of the admitted range)
        self.os_failures: list[str] = []  # the last trial's write failure, if it had one
        self._open_study()
        self.start = time.perf_counter()  # trials' times in the log count from here (after the warm start)

    def _teacher(self) -> dict:
        with file_lock(self.rd.root / ".teacher.lock"):  # measured once per run, whichever worker comes first
            if self.rd.teacher_json.is_file():  # a new run folder has none: a resumed or joined run has
                return read_json(self.rd.teacher_json)
            self.log("measuring the fp32 teacher artifact ...")
            teacher = self.flow.measure_teacher(self.ctx, self.rd.teacher_dir)
            atomic_write_json(self.rd.teacher_json, teacher)
            return teacher

    def _open_study(self) -> None:
        """The run's study (created, resumed or joined), its warm start queued and its sampler set."""
        s, rd = self.settings, self.rd
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger("optuna.study._optimize").addFilter(_QUIET)  # where Optuna logs failed trials; once
        study = optuna.create_study(
            storage=storages.make(s.storage, rd), study_name=storages.study_name(rd, s.storage),
            directions=[o.direction for o in self.objectives],
            # a shared storage: the first of the run's processes to get here creates the study, the others load it
            load_if_exists=self.resume or s.join or s.storage is not None)
        study.set_metric_names([o.name for o in self.objectives])
        if self.resume and s.storage is None:  # a shared storage's dead trials are the heartbeat's to fail
            _fail_dead_trials(study, self.log)
        if self.ours and not study.trials and not (self.resume or s.join):  # a new study: the flow's first recipes
            self.pending = list(self.flow.warm_start(self.ctx, s.trials))
            self.ends = any(_is_end(p.attrs) for p in self.pending)
            if self.pending:
                self.log(f"warm start: {len(self.pending)} recipe(s) first, each screened within the budget")
        self.study = study
        self.top_up()
        # multivariate + group: the space is conditional (group size only for weight-only bits). A resumed
        # sampler seeded as the first was would propose the same recipes again; a worker's is its own (seed +
        # worker id); constant liar: running trials count as bad, so concurrent workers spread out
        study.sampler = _sampler(s, s.seed + s.worker_id + (len(study.trials) if self.resume else 0), s.trials)

    def top_up(self) -> None:
        """Queue the warm start: all at once; or, where variants may be queued (exploit.py), its brackets at once
        (the ends of the admitted range: the compact and the narrow student; the largest admitted student where
        neither exists) and the rest one at a time when the queue is empty, so that a front student's cheap variants
        run before the rest of the start-up."""
        while self.pending:
            first = self.pending[0]
            bracket = _is_end(first.attrs) or (first.attrs.get("largest_admitted") and not self.ends)
            if self.exploiting and not bracket and \
                    self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                return
            self.study.enqueue_trial(first.params, user_attrs=first.attrs)
            self.pending.pop(0)

    def complete(self) -> list:
        return self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))

    def objective(self, trial: optuna.Trial):
        """One trial: its recipe reused, screened out, or built and measured (then maybe trained further, then its
        student's variants queued)."""
        study, s, log = self.study, self.settings, self.log
        if not _claim(study, trial, s.trials):
            trial.set_user_attr("reason", "surplus: other workers completed the run's trials first")
            study.stop()
            raise optuna.TrialPruned("surplus")
        trial.set_user_attr("worker", s.worker_id)
        cand = self.flow.resolve(self.ctx, self.space.suggest(trial, self.ctx.limits))  # as built: alike are one
        trial.set_user_attr("label", cand.label())
        recipe = json.loads(json.dumps(asdict(cand)))  # as the storage keeps it (tuples come back as lists)
        trial.set_user_attr("recipe", recipe)
        earlier = _completed_with_recipe(study, recipe, trial.number, self.flow) if self.ours else None
        if earlier is not None:  # the same recipe builds the same model: its measurements stand
            return self.reuse(trial, cand, earlier)
        if self.exploiting and "variant_of" in trial.user_attrs:
            withdrawn = _withdrawn(study, trial.user_attrs["variant_of"], self.budget)
            if withdrawn:  # failed, not pruned: a sampler learns nothing from it (a pruned trial would rank well)
                trial.set_user_attr("reason", withdrawn)
                log(f"[trial {trial.number:3d}] {cand.label():34s} {withdrawn}: not built")
                raise Withdrawn(withdrawn)
        predicted, reasons = self.flow.screen(self.ctx, cand)
        for key, value in predicted.items():
            trial.set_user_attr(key, value)
        n_done = len(self.complete())
        head = f"[trial {trial.number:3d} | {n_done}/{s.trials} done | {time.perf_counter() - self.start:5.0f} s]"
        if reasons and self.ours:
            # the predicted misses as the trial's constraints: Optuna's TPE ranks a pruned trial *without*
            # constraints among the good ones while few trials have completed, and one with violated
            # constraints last, nearer misses first; so the sampler learns the budget from what it screened out
            for key, value in predicted_violations(predicted, self.budget).items():
                trial.set_constraint(key, float(value))
            trial.set_user_attr("reason", "rejected before training: " + "; ".join(reasons))
            log(f"{head} {cand.label():34s} rejected before training: {'; '.join(reasons)}")
            raise optuna.TrialPruned(trial.user_attrs["reason"])
        log(f"{head} {cand.label():34s} building ...")
        t0 = time.perf_counter()
        # a variant of a promoted trial (exploit.py) starts from that student after its second rung (cached)
        inherited = self.more if trial.user_attrs.get("student_rung") == 1 else None
        metrics = self.build(trial, cand, head, inherited)
        if inherited:
            metrics = {**metrics, "rung": 1, "rung_reason": f"a variant of trial {trial.user_attrs['variant_of']}: "
                                                            "its student after the second rung, trained no further"}
        elif self.ours:
            metrics = self.second_rung(trial, cand, metrics, head)
        metrics["elapsed_s"] = time.perf_counter() - t0
        metrics["train_device"] = accel.describe()
        for key, value in metrics.items():
            trial.set_user_attr(key, value)  # metrics as user attrs: optuna-dashboard shows them
        for key, value in pareto.shipping_violations(metrics, self.budget).items():
            trial.set_constraint(key, float(value))
        ok = pareto.feasible(metrics, self.budget)
        log(f"{head} {outputs.metrics_line('', metrics, self.budget)}  {'meets budget' if ok else 'over budget'} "
            f"({metrics['elapsed_s']:.0f} s)")
        if self.exploiting:
            self.queue_variants(trial, metrics, head)
        return tuple(metrics[o.name] for o in self.objectives)

    def reuse(self, trial, cand, earlier) -> tuple:
        """An earlier trial built this recipe: its measurements and files stand for this one."""
        for key, value in earlier.user_attrs.items():
            if key not in ("label", "recipe", "worker", "artifact"):
                trial.set_user_attr(key, value)
        trial.set_user_attr("same_recipe_as_trial", earlier.number)
        link_copy(self.rd.trial_dir(earlier.number), self.rd.trial_dir(trial.number))  # select/export find its files
        trial.set_user_attr("artifact", str(self.rd.artifact(trial.number)))
        for key, value in pareto.shipping_violations(earlier.user_attrs, self.budget).items():
            trial.set_constraint(key, float(value))
        self.log(f"[trial {trial.number:3d}] {cand.label():34s} already built as trial {earlier.number}: "
                 "its measurements reused, nothing trained")
        return tuple(earlier.values)

    def build(self, trial, cand, head: str, more) -> dict:
        """The flow builds and measures the candidate; a write failure fails the trial, two in a row stop the run."""
        try:
            metrics = self.flow.run_candidate(self.ctx, cand, self.rd.trial_dir(trial.number), log=self.log,
                                              more=more)
        except CandidateError as exc:
            trial.set_user_attr("reason", f"cannot build: {exc}")
            self.log(f"{head} failed: {exc}")
            raise
        except (OSError, SafetensorError) as exc:  # disk full, permissions: the machine's, not the recipe's fault
            reason = (f"cannot write: {getattr(exc, 'strerror', None) or exc} "
                      f"({getattr(exc, 'filename', '') or 'no file'})")
            trial.set_user_attr("reason", reason)
            self.log(f"{head} failed: {reason}")
            if self.os_failures:
                raise RunStopped(f"two trials in a row could not write ({reason}); completed trials are in "
                                 f"{self.rd.study_db}; free space or fix permissions, then --resume {self.rd.name}") \
                    from None
            self.os_failures.append(reason)
            raise CandidateError(reason) from None
        self.os_failures.clear()
        return metrics

    def second_rung(self, trial, cand, metrics: dict, head: str) -> dict:
        """rungs.py: train a promising first-rung trial further and measure it again; record the rung either way."""
        if self.more is None:
            return {**metrics, "rung": 0, "rung_reason": "one rung: the run has no second rung"}
        vouched = outputs.row_bounds(self.rd, {"metrics": metrics, "trial": trial.number}, self.budget,
                                     self.teacher)[self.quality.name]["meets"]
        earlier = [t.user_attrs for t in self.complete()]
        up, why = rungs.promotion(metrics, vouched, self.budget, earlier, self.space.promote,
                                  bracket=_bracket(trial.user_attrs))
        if not up:
            return {**metrics, "rung": 0, "rung_reason": why}
        head = head[:head.rindex("|")] + f"| {time.perf_counter() - self.start:5.0f} s]"  # its time now
        self.log(f"{head} rung 0: {outputs.metrics_line('', metrics, self.budget)}; {why}: "
                 f"{self.more.epochs:g} more epoch(s)")
        first = {f"rung0_{k}": metrics[k] for k in (self.quality.name, self.objectives[1].name, "memory_mb",
                                                    "distill_s") if k in metrics}
        again = {}
        try:  # built beside the trial's folder and swapped in whole: a failure leaves the first rung's files
            atomic_replace_dir(lambda tmp: again.update(self.flow.run_candidate(self.ctx, cand, tmp, log=self.log,
                                                                                more=self.more)),
                               self.rd.trial_dir(trial.number))
        except (CandidateError, OSError, SafetensorError) as exc:
            self.log(f"{head} second rung failed ({exc}); the first rung's measurements stand")
            return {**metrics, "rung": 0, "rung_reason": f"{why}; but the second rung failed: {exc}"}
        again["artifact"] = str(self.rd.artifact(trial.number))  # where the swap put it
        return {**again, **first, "rung": 1, "rung_reason": why}

    def queue_variants(self, trial, metrics: dict, head: str) -> None:
        """exploit.py: a trial on the run's front within every budget gets cheap variants of its student."""
        study = self.study
        earlier = {t.number: t.user_attrs for t in self.complete()}
        earns, _ = exploit.earns_variants(metrics, self.budget, earlier)
        if not earns:
            return
        student = exploit.student_params(trial.params)
        alive = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL]  # withdrawn: none
        same = [t for t in alive if exploit.student_params(_params_of(t)) == student]
        siblings = sum("variant_of" in t.user_attrs for t in same)
        cap = exploit.MAX_PER_BRACKET if any(_bracket(t.user_attrs) for t in same) else exploit.MAX_PER_STUDENT
        n = min(self.space.exploit.variants, cap - siblings)
        if n <= 0:
            return
        picks = self.flow.variants(self.ctx, dict(trial.params), _recipes_taken(study, self.flow, self.ctx, self.space),
                                   n, seed=self.settings.seed * 10_000 + trial.number)
        rung = metrics.get("rung", 0)
        for params in picks:
            study.enqueue_trial(params, user_attrs={"variant_of": trial.number, "student_rung": rung})
        if picks:
            self.log(f"{head} on the front within every budget: {len(picks)} variant(s) of its student queued "
                     "(other pruning/quantization, no distillation)")

    def after_trial(self, study, _trial) -> None:
        outputs.write_tables(study, self.rd, self.budget)
        self.top_up()

    def optimize(self) -> None:
        s = self.settings
        outputs.write_tables(self.study, self.rd, self.budget)  # a resumed run's tables are rewritten first
        if len(self.complete()) >= s.trials:
            return
        try:
            self.study.optimize(self.objective, n_trials=s.trials * 6, timeout=s.timeout_s,
                                catch=(CandidateError, Withdrawn), gc_after_trial=True,
                                callbacks=[MaxTrialsCallback(s.trials, states=(TrialState.COMPLETE,)),
                                           self.after_trial])
        finally:
            outputs.write_tables(self.study, self.rd, self.budget)

    def finish(self) -> dict:
        """Selection and export happen once, by the worker that sees the run complete with nothing running."""
        rd, study = self.rd, self.study
        with file_lock(rd.root / ".finish.lock"):  # blocking: whoever comes second re-checks after the first
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            complete = sorted(t.number for t in self.complete())
            marker = rd.root / ".finished"
            finished = read_json(marker, default=None, mapping=False) == complete
            if running or (self.settings.storage is not None and finished):
                self.log(f"worker {self.settings.worker_id} done; the worker that ends last selects and exports")
                return {"meets_budget": True, "worker_only": True}
            selected = outputs.finish(study, rd, log=self.log)
            atomic_write_json(marker, complete)
            return selected


def run(flow: Flow, target: Target, space: Space, prepared, run_dir: Path, settings: RunSettings, resume: bool,
        log=print) -> dict:
    """A run of `flow` (or one more worker on it): trials until `settings.trials` have completed, then selection."""
    engine = Engine(flow, target, space, prepared, run_dir, settings, resume, log)
    engine.optimize()
    return engine.finish()

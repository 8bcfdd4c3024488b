"""The Optuna study: ask a recipe per trial, screen it, build and measure it, record everything.

The only module besides space.py that talks to Optuna. Every trial's outcome is in study.db the
moment it ends; trials.csv and pareto.csv are rewritten after each trial, so a crash loses nothing.
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from . import accel, outputs, pareto
from .candidate import Candidate, DistillParams, PruneParams, QuantParams
from .errors import CandidateError, ConfigError
from .families.base import Limits
from .objectives import for_budget
from .pipeline import Context, make_context, measure_teacher, run_candidate, screen
from .run_dir import STUDY_NAME, RunDir, atomic_write_json
from .space import Space, check_against_teacher, values
from .target import Target


@dataclass(frozen=True)
class RunSettings:
    trials: int  # completed trials to reach
    timeout_s: float | None
    seed: int
    threads: int


def smallest_candidates(space: Space, limits: Limits) -> list[Candidate]:
    """The cheapest recipes the space allows, one per quantization option: if none fits, nothing will."""
    k = space.knobs
    low = lambda name: min(values(k[name]))  # noqa: E731
    distill = DistillParams(layers=low("distill.layers"), hidden=low("distill.hidden"),
                            heads=min(low("distill.heads"), limits.max_heads(low("distill.hidden"))),
                            ffn=low("distill.ffn"),
                            vocab="task" if "task" in values(k["distill.vocab"]) else "full")
    prune = (PruneParams("structured", max(values(k["prune.ratio"])))
             if "structured" in values(k["prune.type"]) else PruneParams())
    quants = []
    for bits, act, group in itertools.product(values(k["quant.bits"]), values(k["quant.activations"]),
                                              values(k["quant.group_size"])):
        quants.append(QuantParams(bits=bits, activations=act if bits == 8 else "none",
                                  group_size=group if bits < 32 and (bits != 8 or act == "none") else None))
    return [Candidate(distill, prune, q) for q in set(quants)]


def check_feasible_at_all(ctx: Context, space: Space) -> None:
    """Reject an impossible budget before any training, naming the budget and what it would take."""
    best = {}
    limits = ctx.family.limits(ctx.family.shape_of(ctx.prepared.teacher))
    for cand in smallest_candidates(space, limits):
        predicted, _ = screen(ctx, cand)
        for key, value in predicted.items():
            best[key] = min(best.get(key, value), value)
    budget, path = ctx.target.budget, ctx.target.path
    if best["predicted_memory_mb"] > budget.memory_mb:
        raise ConfigError(path, "budget.memory_mb", f"{budget.memory_mb} MB, but the smallest recipe in "
                                                    f"{space.path} needs {best['predicted_memory_mb']:.1f} MB; "
                                                    "raise the budget or widen the space")
    if best.get("predicted_p99_latency_ms", 0) > budget.p99_latency_ms:
        raise ConfigError(path, "budget.p99_latency_ms",
                          f"{budget.p99_latency_ms} ms, but the fastest recipe in {space.path} is estimated at "
                          f"{best['predicted_p99_latency_ms']:.2f} ms; raise the budget or widen the space")


def run(target: Target, space: Space, prepared, run_dir: Path, settings: RunSettings, resume: bool,
        log=print) -> dict:
    rd = RunDir(run_dir)
    cache_dir = run_dir.parent / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    family = prepared.family
    limits = family.limits(family.shape_of(prepared.teacher))
    check_against_teacher(space, limits)
    ctx = make_context(prepared, target, cache_dir, settings.threads, settings.seed)
    check_feasible_at_all(ctx, space)
    log(f"model family {family.name}, task type {prepared.task_type.NAME}, runtime {ctx.backend.name}; "
        f"training on {accel.describe()}")

    if resume and rd.teacher_json.is_file():
        teacher = json.loads(rd.teacher_json.read_text())
    else:
        log("measuring the fp32 teacher artifact ...")
        teacher = measure_teacher(ctx, rd.teacher_dir)
        atomic_write_json(rd.teacher_json, teacher)
    budget = outputs.resolved_budget(target, teacher[prepared.task_type.OBJECTIVE.name],
                                     prepared.task_type.OBJECTIVE)
    outputs.save_run_inputs(rd, prepared, budget, target, ctx.backend)
    log(outputs.metrics_line("teacher", teacher) + f"  | budget: {outputs.budget_line(budget)}")

    objectives = for_budget(budget)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=rd.study_url, study_name=STUDY_NAME, directions=[o.direction for o in objectives],
        load_if_exists=resume,
        # multivariate + group: the space is conditional (group size only for weight-only bits)
        sampler=optuna.samplers.TPESampler(seed=settings.seed, multivariate=True, group=True,
                                           n_startup_trials=min(8, settings.trials)))
    study.set_metric_names([o.name for o in objectives])
    start = time.perf_counter()

    def objective(trial: optuna.Trial):
        cand = space.suggest(trial, limits)
        trial.set_user_attr("label", cand.label())
        trial.set_user_attr("recipe", asdict(cand))
        predicted, reasons = screen(ctx, cand)
        for key, value in predicted.items():
            trial.set_user_attr(key, value)
        n_done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        head = f"[trial {trial.number:3d} | {n_done}/{settings.trials} done | {time.perf_counter() - start:5.0f} s]"
        if reasons:
            trial.set_user_attr("reason", "rejected before training: " + "; ".join(reasons))
            log(f"{head} {cand.label():34s} rejected before training: {'; '.join(reasons)}")
            raise optuna.TrialPruned(trial.user_attrs["reason"])
        log(f"{head} {cand.label():34s} building ...")
        t0 = time.perf_counter()
        try:
            metrics = run_candidate(ctx, cand, rd.trial_dir(trial.number), log=log)
        except CandidateError as exc:
            trial.set_user_attr("reason", f"cannot build: {exc}")
            log(f"{head} failed: {exc}")
            raise
        metrics["elapsed_s"] = time.perf_counter() - t0
        metrics["train_device"] = accel.describe()
        for key, value in metrics.items():
            trial.set_user_attr(key, value)  # metrics as user attrs: optuna-dashboard shows them
        for key, value in pareto.violations(metrics, budget).items():
            trial.set_constraint(key, float(value))
        ok = pareto.feasible(metrics, budget)
        log(f"{head} {outputs.metrics_line('', metrics)}  {'meets budget' if ok else 'over budget'} "
            f"({metrics['elapsed_s']:.0f} s)")
        return tuple(metrics[o.name] for o in objectives)

    def write(study_, _trial):
        outputs.write_tables(study_, rd, budget)

    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if done < settings.trials:
        try:
            study.optimize(objective, n_trials=settings.trials * 6, timeout=settings.timeout_s,
                           catch=(CandidateError,), gc_after_trial=True,
                           callbacks=[MaxTrialsCallback(settings.trials, states=(TrialState.COMPLETE,)), write])
        finally:
            outputs.write_tables(study, rd, budget)
    return outputs.finish(study, rd, log=log)

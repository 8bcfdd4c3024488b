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

from . import arch, outputs, pareto
from .candidate import HEAD_DIM, Candidate, DistillParams, PruneParams, QuantParams
from .errors import CandidateError, ConfigError
from .pipeline import Context, make_context, measure_teacher, run_candidate, screen
from .space import Space, check_against_teacher, values
from .target import Target

DIRECTIONS = ["maximize", "minimize", "minimize"]  # accuracy, p99_latency_ms, memory_mb


@dataclass(frozen=True)
class RunSettings:
    trials: int  # completed trials to reach
    timeout_s: float | None
    seed: int
    threads: int


def smallest_candidates(space: Space) -> list[Candidate]:
    """The cheapest recipes the space allows, one per quantization option: if none fits, nothing will."""
    k = space.knobs
    low = lambda name: min(values(k[name]))  # noqa: E731
    distill = DistillParams(layers=low("distill.layers"), hidden=low("distill.hidden"),
                            heads=min(low("distill.heads"), low("distill.hidden") // HEAD_DIM), ffn=low("distill.ffn"),
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
    for cand in smallest_candidates(space):
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
    cache_dir = run_dir.parent / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    t = arch.shape_of(prepared.teacher)
    check_against_teacher(space, t.layers, t.hidden, min(t.ffn))
    ctx = make_context(prepared, target, cache_dir, settings.threads, settings.seed)
    check_feasible_at_all(ctx, space)

    teacher_file = run_dir / "teacher.json"
    if resume and teacher_file.is_file():
        teacher = json.loads(teacher_file.read_text())
    else:
        log("measuring the fp32 teacher artifact ...")
        teacher = measure_teacher(ctx, run_dir / "teacher")
        teacher_file.write_text(json.dumps(teacher, indent=2))
    budget = outputs.resolved_budget(target, teacher["accuracy"])
    outputs.save_run_inputs(run_dir, prepared, budget, target)
    log(outputs.metrics_line("teacher", teacher) + f"  | budget: {outputs.budget_line(budget)}")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=f"sqlite:///{run_dir / 'study.db'}", study_name="search", directions=DIRECTIONS,
        load_if_exists=resume,
        # multivariate + group: the space is conditional (group size only for weight-only bits)
        sampler=optuna.samplers.TPESampler(seed=settings.seed, multivariate=True, group=True,
                                           n_startup_trials=min(8, settings.trials)))
    study.set_metric_names(["accuracy", "p99_latency_ms", "memory_mb"])
    start = time.perf_counter()

    def objective(trial: optuna.Trial):
        cand = space.suggest(trial)
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
            metrics = run_candidate(ctx, cand, run_dir / "trials" / f"{trial.number:04d}", log=log)
        except CandidateError as exc:
            trial.set_user_attr("reason", f"cannot build: {exc}")
            log(f"{head} failed: {exc}")
            raise
        metrics["elapsed_s"] = time.perf_counter() - t0
        for key, value in metrics.items():
            trial.set_user_attr(key, value)  # metrics as user attrs: optuna-dashboard shows them
        for key, value in pareto.violations(metrics, budget).items():
            trial.set_constraint(key, float(value))
        ok = pareto.feasible(metrics, budget)
        log(f"{head} {outputs.metrics_line('', metrics)}  {'meets budget' if ok else 'over budget'} "
            f"({metrics['elapsed_s']:.0f} s)")
        return metrics["accuracy"], metrics["p99_latency_ms"], metrics["memory_mb"]

    def write(study_, _trial):
        outputs.write_tables(study_, run_dir, budget)

    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if done < settings.trials:
        try:
            study.optimize(objective, n_trials=settings.trials * 6, timeout=settings.timeout_s,
                           catch=(CandidateError,), gc_after_trial=True,
                           callbacks=[MaxTrialsCallback(settings.trials, states=(TrialState.COMPLETE,)), write])
        finally:
            outputs.write_tables(study, run_dir, budget)
    return outputs.finish(study, run_dir, log=log)


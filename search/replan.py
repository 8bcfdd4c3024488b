"""`python -m search replan RUN --target OTHER.yaml`: answer another device or budget from a finished search.

A trial's quality does not depend on the device; its latency and memory do. A replan re-prices every completed
trial of RUN for the new target (the run's flow does it, `Flow.reprice`: estimated targets from each trial's shape
and recipe, measured targets by measuring each stored artifact there),
writes the result as a run folder of its own beside RUN (`RUN.replan-<target>`: a study holding the re-priced
trials, their files hard-linked, nothing trained), and selects in it with the same policies, bounds and
explanations as a run. `select`, `report`, `export` and `run --resume` work on it like on any run: the last is how
`--trials N` adds trials where the front near the new budget is thin. RUN itself is never written to."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import TrialState

from . import backends, flows, outputs, pareto
from .errors import ConfigError
from .objectives import for_budget
from .run_dir import STUDY_NAME, RunDir, atomic_replace_dir, atomic_write_json, link_copy, link_file, read_json
from .target import Target

MIN_FRONT = pareto.THIN_FRONT


def replan_dir(source: Path, target: Target, results: Path) -> Path:
    """`results/RUN.replan-<target>`: in the results folder even when RUN was given as a path outside it (a replan
    writes nothing anywhere else)."""
    from .schema import slug

    return results / f"{source.name}.replan-{slug(target.name)}"


def _check(source: RunDir, saved: dict, target: Target) -> None:
    if not source.selected_json.is_file():
        raise ConfigError(source.root, "RUN", "has not finished (no selected.json); let it finish or "
                                              f"`python -m search select {source.name}` first")
    if target.device.runtime != saved.get("backend", backends.DEFAULT):
        raise ConfigError(target.path, "device.runtime", f"{target.device.runtime}, but {source.name}'s artifacts "
                                                         f"run on {saved.get('backend', backends.DEFAULT)}: replan "
                                                         "onto a target of the same runtime")


def build(source_dir: Path, target: Target, out: Path, log=print) -> RunDir:
    """Write the replan run folder `out` (complete or not at all) and return it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    src = RunDir(source_dir)
    saved = src.saved()
    _check(src, saved, target)
    teacher = read_json(src.teacher_json)
    run = read_json(src.run_json)  # every file read before anything is measured or written
    flow = flows.of_budget(saved["budget"])
    budget = flow.resolved_budget(target, teacher)
    for folder in (src.teacher_dir, *([src.tokenizer_dir] if flow.TOKENIZED else [])):
        if not folder.is_dir():
            raise ConfigError(folder, "RUN", "missing: was the run folder pruned? replan needs every stored artifact")
    locks = out.parent / "cache" / "locks"  # the results folder's, as in a run (study.run): results/cache/locks
    old = outputs.load_study(src.root)  # the run's own storage (SQLite in its folder, or the shared one it named)
    done = old.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    how = "estimating" if target.device.latency == "estimated" else "measuring"
    log(f"replan of {src.name} for {target.name}: {how} {len(done)} completed trials and the teacher "
        "(nothing is trained)")

    repriced = flow.reprice(teacher, saved, target, src.teacher_dir / saved["artifact_name"], locks)
    if repriced is None:
        raise ConfigError(src.root, "RUN", f"runs of task kind {flow.NAME} cannot be replanned yet; run the search "
                                           "again with --target")
    teacher_priced = {**teacher, **repriced, "artifact": str(out / "teacher" / saved["artifact_name"])}
    latency = for_budget(budget)[1]
    priced = []
    for t in done:
        a = t.user_attrs
        if not src.artifact(t.number).is_file() or "recipe" not in a:
            raise ConfigError(src.trial_dir(t.number), "RUN", "no artifact or recipe for this completed trial: was "
                                                              "the run folder pruned? replan needs every one")
        metrics = flow.reprice(a, saved, target, src.artifact(t.number), locks)
        priced.append((t, {**a, **metrics, "replan_of_trial": t.number}))
        if target.device.latency == "measured":  # seconds each: show progress
            log(f"  [{len(priced)}/{len(done)}] trial {t.number}: {latency.name} {metrics[latency.name]:.2f} ms, "
                f"peak {metrics['memory_mb']:.1f} MB")

    def fill(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        rd = RunDir(tmp)
        for name in ("tokenizer", "teacher"):
            if (src.root / name).is_dir():
                link_copy(src.root / name, tmp / name)
        if src.labels.is_file():
            link_file(src.labels, rd.labels)
        atomic_write_json(rd.teacher_json, teacher_priced)
        dev = target.device
        atomic_write_json(rd.budget_json, {
            **saved, "target": target.name, "budget": budget, "latency": dev.latency, "threads": dev.threads,
            "runner": asdict(dev.runner) if dev.runner else None, **flow.workload_inputs(target),
            "replan_of": src.name})
        atomic_write_json(rd.run_json, {**run, "target": str(target.path.resolve()), "trials": len(priced),
                                        "storage": None, "replan_of": src.name})
        study = optuna.create_study(storage=f"sqlite:///{rd.study_db}", study_name=STUDY_NAME,
                                    directions=[o.direction for o in for_budget(budget)])
        study.set_metric_names([o.name for o in for_budget(budget)])
        for number, (t, attrs) in enumerate(priced):  # trial numbers follow the order of the source's
            link_copy(src.trial_dir(t.number), rd.trial_dir(number))
            attrs = {**attrs, "artifact": str(out / "trials" / f"{number:04d}" / saved["artifact_name"])}
            attrs.pop("same_recipe_as_trial", None)  # the source's numbering; replan_of_trial says where it came from
            attrs.pop("retry_of", None)
            study.add_trial(optuna.trial.create_trial(
                state=TrialState.COMPLETE, values=[attrs[o.name] for o in for_budget(budget)], params=t.params,
                # through JSON: the storage wants its own distribution objects
                distributions={k: json_to_distribution(distribution_to_json(d)) for k, d in t.distributions.items()},
                user_attrs=attrs,
                constraints={k: float(v) for k, v in pareto.shipping_violations(attrs, budget).items()}))

    atomic_replace_dir(fill, out)
    return RunDir(out)


def thin(rows: list[dict], budget: dict) -> tuple[bool, str]:
    """Whether the front within the new budget is thin (fewer than MIN_FRONT candidates), and why."""
    ok = [r["metrics"] | {"trial": r["trial"]} for r in rows if pareto.feasible(r["metrics"], budget)]
    n = len(pareto.front(ok, for_budget(budget)))
    if n >= MIN_FRONT:
        return False, f"{n} candidates on the front within the new budget (>= {MIN_FRONT}): no new trials needed"
    return True, f"only {n} candidate(s) on the front within the new budget (< {MIN_FRONT})"


def replan(source_dir: Path, target: Target, out: Path, policy: str, log=print) -> tuple[dict, RunDir, float]:
    """Build the replan folder and select in it: (selected.json's content, the folder, seconds taken)."""
    t0 = time.perf_counter()
    if out.exists():
        if not RunDir(out).selected_json.is_file():
            raise ConfigError(out, "--run-id", f"exists but is incomplete (no selected.json): `python -m search "
                                               f"select {out.name}` finishes it, or delete it and replan again")
        raise ConfigError(out, "--run-id", "already exists: `select`, `report` or `export` it, add trials with "
                                           f"`run --resume {out.name} --trials N`, or give another --run-id")
    rd = build(source_dir, target, out, log=log)
    selected = outputs.finish(outputs.load_study(rd.root), rd, policy=policy, log=log)
    return selected, rd, time.perf_counter() - t0

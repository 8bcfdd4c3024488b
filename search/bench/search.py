"""`python -m search bench search`: this project's search strategy against random sampling and NSGA-II (no warm
start, no screen, no reuse) for the same wall-clock budget per run, several seeds, one or more tasks.

Every run is a plain `python -m search run --strategy S --seed K --timeout-min M` in a results folder of its own
(results/bench/search-runs/<target>-<digest>-<minutes>min-<threads>t[-<space>]/<task>-<strategy>-s<seed>/), sharing
only the fine-tuned teacher: students are cached per folder, so no strategy trains faster on another's students. A
finished run of the same configuration is not run again (the bench can be interrupted and resumed). Per task and
target, the reference front is the union of everything every run found; each run's hypervolume within the budget
box is followed over time from its first trial's start (preparation excluded: it is the same for all). Writes
results/bench/search.csv (one row per completed trial), search.md (time to 95% of the reference hypervolume, time
to the first budget-meeting candidate, asks per completed trial and distinct models built, per run and per
strategy, and the verdict of the issue's criterion) and search.html (hypervolume over time); a bench of other tasks
than the default one writes search-<task>[-<task>...].*."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from .. import pareto
from ..run_dir import atomic_write_text, link_copy
from ..strategies import OURS, STRATEGIES
from . import summary

SHARE = 0.95  # of the reference hypervolume
SPEED_UP = 3.0  # the criterion: ours reaches SHARE in at most a third of the time random sampling needs


def _slug(task: str | None) -> str:
    from ..schema import slug

    return "default" if task is None else slug(Path(task).stem)


def _config(target: str, minutes: float, threads: int, space: str | None) -> str:
    """The folder of one bench configuration: a finished run is reused only by a bench with the same target (its
    device, workload and budget as loaded, not only its file name), minutes, training threads and space (another
    budget is another experiment)."""
    import hashlib

    from ..schema import slug
    from ..target import load_target

    t = load_target(target)
    digest = hashlib.sha256(repr((t.device, t.workload, t.budget)).encode()).hexdigest()[:8]
    return "-".join([slug(Path(target).stem), digest, f"{minutes:g}min", f"{threads}t"]
                    + ([slug(Path(space).stem)] if space else []))


def _prepare_teacher(task: str | None, cache: Path, log) -> Path:
    """The fine-tuned teacher, once, in the main cache; returns its cache folder (linked into every run's)."""
    from ..tasks import load_task
    from ..tasks.teacher import prepare, teacher_folder

    loaded = load_task(task)
    prepare(loaded, cache, log=log)
    return teacher_folder(loaded, cache)


def _run_one(task: str | None, target: str, space: str | None, strategy: str, seed: int, minutes: float,
             threads: int, folder: Path, teacher_cache: Path, log) -> Path:
    run = folder / "run"
    if (run / "selected.json").is_file():
        log(f"{folder.name}: finished earlier, reused")
        return run
    if run.exists():  # an interrupted run: its timing would not be comparable, start it again
        import shutil

        shutil.rmtree(folder)
    (folder / "cache").mkdir(parents=True, exist_ok=True)
    link_copy(teacher_cache, folder / "cache" / teacher_cache.name)
    argv = [sys.executable, "-m", "search", "run", "--target", target, "--strategy", strategy, "--seed", str(seed),
            "--trials", "1000", "--timeout-min", str(minutes), "--threads", str(threads), "--run-id", "run"]
    argv += (["--task", task] if task else []) + (["--space", space] if space else [])
    log(f"{folder.name}: {minutes:g} min ...")
    with open(folder / "run.log", "w") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ,
                                                                               "SEARCH_RESULTS_DIR": str(folder)})
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"{folder.name}: exit {proc.returncode}; see {folder / 'run.log'}")
    return run


def timeline(run: Path, budget_s: float | None = None) -> tuple[list[dict], dict, int]:
    """(completed trials in completion order with their seconds since the first trial started, metrics and the
    model they built, the run's resolved budget, asks: every trial the sampler proposed or the queue gave). With
    budget_s (the run's minutes): only what happened within it (below)."""
    from ..outputs import load_study

    study = load_study(run)
    budget = json.loads((run / "budget.json").read_text())["budget"]
    rows, asks = _within(study.get_trials(deepcopy=False), budget, budget_s)
    return rows, budget, asks


def _within(trials, budget: dict, budget_s: float | None) -> tuple[list[dict], int]:
    """(completed rows, asks) of a run's trials, cut at budget_s seconds after the first trial's start. `run
    --timeout-min` stops *starting* trials: the one in flight at the end runs to completion (a Rotten Tomatoes
    student finished at 1671 s of a 900-s run), so without the cut a strategy whose trials are long would be
    credited with time the others did not get. A trial completed after the cut does not count; a trial started
    after it was not asked for within the budget."""
    from ..outputs import metric_columns

    started = [t for t in trials if t.datetime_start]
    if not started:
        return [], 0
    t0 = min(t.datetime_start for t in started)
    since = lambda when: (when - t0).total_seconds()  # noqa: E731
    inside = lambda when: budget_s is None or since(when) <= budget_s  # noqa: E731
    done = sorted((t for t in trials if t.state.name == "COMPLETE" and inside(t.datetime_complete)),
                  key=lambda t: t.datetime_complete)
    rows = [{"trial": t.number, "t_s": since(t.datetime_complete), "model": _model(t.user_attrs),
             "metrics": {k: t.user_attrs[k] for k in metric_columns(budget) if k in t.user_attrs},
             "eval_examples": t.user_attrs.get("eval_examples")} for t in done]
    # a recipe still queued when the run ended (a variant, exploit.py) was never asked for
    return rows, sum(t.datetime_start is not None and inside(t.datetime_start) for t in trials)


def _model(attrs: dict) -> str | None:
    """What a trial built: its whole recipe as built (the label leaves knobs out, e.g. recovery steps), with the
    per-layer precision the solver chose."""
    from ..flows.text_classification.pipeline import as_built as _as_built  # `bench search` runs classifiers

    solved = (attrs.get("precision_solver") or {}).get("layer_options")
    recipe = attrs.get("recipe")
    return None if recipe is None else json.dumps([_as_built(recipe), solved], sort_keys=True)


def summarize(runs: list[dict], minutes: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """runs: {task, target, strategy, seed, rows, budget, asks}. Returns (per completed trial, per run) frames; one
    reference front per task and target (one budget box). With the runs' minutes: each run's share of the
    reference a third of the way in (what the criterion compares with random's share at the end)."""
    per_trial, per_run = [], []
    for task, target in sorted({(r["task"], r.get("target", "")) for r in runs}):
        mine = [r for r in runs if (r["task"], r.get("target", "")) == (task, target)]
        budget = mine[0]["budget"]
        reference = pareto.hypervolume([row["metrics"] for r in mine for row in r["rows"]], budget)
        for r in mine:
            seen, reach, first_ok, third = [], None, None, 0.0
            for row in r["rows"]:
                seen.append(row["metrics"])
                hv = pareto.hypervolume(seen, budget)
                if minutes is not None and row["t_s"] <= minutes * 60 / SPEED_UP and reference:
                    third = hv / reference
                if first_ok is None and pareto.feasible(row["metrics"], budget):
                    first_ok = row["t_s"]
                if reach is None and reference > 0 and hv >= SHARE * reference:
                    reach = row["t_s"]
                per_trial.append({"task": task, "target": target, "strategy": r["strategy"], "seed": r["seed"],
                                  "trial": row["trial"], "t_s": row["t_s"], "hypervolume": hv,
                                  "reference_hypervolume": reference})
            per_run.append({"task": task, "target": target, "strategy": r["strategy"], "seed": r["seed"],
                            "completed": len(r["rows"]), "asks": r["asks"],
                            "asks_per_completed": r["asks"] / max(len(r["rows"]), 1),
                            # two completed trials of one model: a trial that taught nothing new
                            "distinct_models": len({row.get("model", row["trial"]) for row in r["rows"]}),
                            **({"share_at_third": third} if minutes is not None else {}),
                            "final_share": (pareto.hypervolume(seen, budget) / reference) if reference else 0.0,
                            f"t_{int(SHARE * 100)}pct_s": reach, "t_first_feasible_s": first_ok})
    return pd.DataFrame(per_trial), pd.DataFrame(per_run)


def resolution(runs: list[dict]) -> list[str]:
    """Per task and target, what one validation example weighs against the 95% threshold: the share of the
    reference left when every reference point's accuracy is one example lower. Below 0.95, a run whose front
    differs from the union's by a single example on every point fails the criterion, so its verdict says as much
    about the validation split's size and the seeds' training noise as about the search. Accuracy only (a language
    model's quality is per token or a ratio, not a count of examples)."""
    from ..objectives import quality

    out = []
    for task, target in sorted({(r["task"], r.get("target", "")) for r in runs}):
        mine = [r for r in runs if (r["task"], r.get("target", "")) == (task, target)]
        budget, rows = mine[0]["budget"], [row for r in mine for row in r["rows"]]
        sizes = [row["eval_examples"] for row in rows if row.get("eval_examples")]
        reference = pareto.hypervolume([row["metrics"] for row in rows], budget)
        if quality(budget).name != "accuracy" or not sizes or reference <= 0:
            continue
        step = 1.0 / min(sizes)
        lower = pareto.hypervolume([{**row["metrics"], "accuracy": row["metrics"]["accuracy"] - step}
                                    for row in rows], budget)
        out.append(f"{task} on {target}: one validation example is {step:.4f} of accuracy ({min(sizes)} examples); "
                   f"the reference with every point one example lower is {lower / reference:.3f} of it")
    return out


def verdict(per_run: pd.DataFrame, minutes: float) -> list[str]:
    """The issue's criterion, per task and seed: ours reaches 95% of the reference in at most a third of the time
    random sampling needs (a run that never reaches it counts as the full budget, a lower bound on its need),
    and finds a budget-meeting candidate first."""
    key = f"t_{int(SHARE * 100)}pct_s"
    out = []
    for (task, seed), g in per_run.groupby([per_run["task"] + " on " + per_run["target"], "seed"]):
        by = {r["strategy"]: r for r in g.to_dict("records")}
        if OURS not in by or "random" not in by:
            continue
        ours, rnd = by[OURS], by["random"]
        t_ours = ours[key] if pd.notna(ours[key]) else None
        t_rnd = rnd[key] if pd.notna(rnd[key]) else minutes * 60
        fast = t_ours is not None and t_ours * SPEED_UP <= t_rnd
        first = pd.notna(ours["t_first_feasible_s"]) and (pd.isna(rnd["t_first_feasible_s"])
                                                          or ours["t_first_feasible_s"] <= rnd["t_first_feasible_s"])
        out.append(f"{task} seed {seed}: {SHARE:.0%} of the reference in "
                   f"{'never' if t_ours is None else f'{t_ours:.0f} s'} vs random "
                   f"{'>= ' if pd.isna(rnd[key]) else ''}{t_rnd:.0f} s: {'PASS' if fast else 'FAIL'}; first "
                   f"budget-meeting candidate first: {'PASS' if first else 'FAIL'}")
    return out


def run(tasks: list[str | None], targets: str | list[str], seeds: list[int], minutes: float, threads: int,
        out_dir: Path, results_dir: Path, strategies=STRATEGIES, space: str | None = None, log=print) -> pd.DataFrame:
    """targets: one for every task, or one per task (a harder task may need a budget whose box is not empty)."""
    targets = [targets] * len(tasks) if isinstance(targets, str) else list(targets)
    runs = []
    for task, target in zip(tasks, targets, strict=True):
        teacher_cache = _prepare_teacher(task, results_dir / "cache", log)
        config = out_dir / "search-runs" / _config(target, minutes, threads, space)
        for strategy in strategies:
            for seed in seeds:
                folder = config / f"{_slug(task)}-{strategy}-s{seed}"
                path = _run_one(task, target, space, strategy, seed, minutes, threads, folder, teacher_cache, log)
                rows, budget, asks = timeline(path, minutes * 60)
                runs.append({"task": _slug(task), "target": Path(target).stem, "strategy": strategy, "seed": seed,
                             "rows": rows, "budget": budget, "asks": asks})
    per_trial, per_run = summarize(runs, minutes)
    # the default task's files are search.*; a bench of other tasks writes its own (search-<task>[-<task>].*)
    stem = "search" if tasks == [None] else "-".join(["search"] + [_slug(t) for t in tasks])
    atomic_write_text(out_dir / f"{stem}.csv", per_trial.to_csv(index=False))
    on = ", ".join(f"{_slug(task)} on {Path(target).stem}" for task, target in zip(tasks, targets))
    lines = [f"# Search strategies at equal wall-clock ({minutes:g} min per run; {on})", "",
             "Hypervolume within the budget box, against the union of every run's trials per task (the reference). "
             f"`t_{int(SHARE * 100)}pct_s`: seconds from the first trial's start until the run's fronts reach "
             f"{SHARE:.0%} of it (empty: never).", "", _markdown_table(per_run), "",
             "## Criterion: ours reaches it in at most a third of random sampling's time, and meets the budget first",
             ""] + [f"- {v}" for v in verdict(per_run, minutes)] + [
             "", "## The threshold against the measurement's resolution", ""] + [f"- {v}" for v in resolution(runs)]
    summary.write(out_dir / f"{stem}.md", "\n".join(lines) + "\n", f"{threads} per run (training)")
    _plot(per_trial, out_dir / f"{stem}.html")
    log("\n".join(lines))
    return per_run


def _markdown_table(frame: pd.DataFrame) -> str:
    """pandas' to_markdown needs `tabulate`; a table of numbers and names needs no dependency."""
    cell = lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else (  # noqa: E731
        f"{v:.3g}" if isinstance(v, float) else str(v))
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns)
    return "\n".join([head] + ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)])


def _plot(per_trial: pd.DataFrame, path: Path) -> None:
    import plotly.express as px

    if per_trial.empty:
        atomic_write_text(path, "<p>no completed trials</p>")
        return
    per_trial = per_trial.assign(box=per_trial["task"] + " on " + per_trial["target"])
    fig = px.line(per_trial, x="t_s", y="hypervolume", color="strategy", line_dash="seed", facet_col="box",
                  markers=True, line_shape="hv", title="hypervolume within the budget over wall-clock time")
    atomic_write_text(path, fig.to_html(include_plotlyjs=True, full_html=True))

"""What a run leaves in results/<run>/: trials.csv, pareto.csv, selected.json, dashboard.html, model/."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from optuna.trial import TrialState

from . import budget_cost, confidence, flows, pareto, report
from .objectives import LATENCY, QUALITY, SLICE_SEP, constraints, for_budget, slice_columns, slice_limits
from .run_dir import RunDir, atomic_replace_dir, atomic_write_json, atomic_write_text, read_json, read_npy
from .target import Target

def metric_columns(budget: dict) -> tuple:
    return flows.of_budget(budget).METRIC_COLUMNS + slice_columns(budget)


def summary_keys(budget: dict) -> tuple:
    return flows.of_budget(budget).SUMMARY_KEYS + slice_columns(budget)


def _limit_text(o, budget: dict) -> str:
    limit = budget[o.budget_key]
    op = ">=" if o.sign > 0 else "<="
    if o.unit == "fraction":
        return f"{o.name} {op} {limit:.4f}" + (f" ({budget[o.budget_key + '_rule']})"
                                               if o.budget_key + "_rule" in budget else "")
    return f"{o.name} {op} {limit:g} {o.unit}"


def budget_line(budget: dict) -> str:
    line = ", ".join(_limit_text(o, budget) for o in constraints(budget))
    limits = slice_limits(budget)
    if limits:
        op = ">=" if limits[0].objective.sign > 0 else "<="
        line += f"; on every slice: {', '.join(f'{s.slice} {op} {s.limit:.4f}' for s in limits)}"
    return line


def metrics_line(name: str, m: dict, budget: dict) -> str:
    src = "" if m["latency_source"] == "measured" else f" ({m['latency_source']})"
    src += " NOISY" if m.get("latency_noisy") else ""
    return f"{name}{' ' if name else ''}" + flows.of_budget(budget).metrics_text(m, src)


def completed_rows(study, budget: dict | None = None) -> list[dict]:
    columns = metric_columns(budget or {})
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        rows.append({"trial": t.number, "params": dict(t.params), "label": t.user_attrs.get("label", ""),
                     "metrics": {k: t.user_attrs[k] for k in columns if k in t.user_attrs}})
    return rows


def write_tables(study, rd: RunDir, budget: dict) -> None:
    records = []
    for t in study.get_trials(deepcopy=False):
        rec = {"trial": t.number, "state": t.state.name, "label": t.user_attrs.get("label", ""),
               **{f"params_{k}": v for k, v in t.params.items()},
               **{k: t.user_attrs.get(k) for k in metric_columns(budget)}}
        if t.state == TrialState.COMPLETE:
            rec["feasible"] = pareto.feasible(t.user_attrs, budget)
        rec["reason"] = t.user_attrs.get("reason", "")
        if "precision_solver" in t.user_attrs:  # the per-layer precision it was built at
            rec["layer_precision"] = " ".join(t.user_attrs["precision_solver"]["layers"])
        if "rung" in t.user_attrs:  # rungs.py: the training it got, and why no more
            rec.update(rung=t.user_attrs["rung"], rung_reason=t.user_attrs.get("rung_reason", ""))
        if "variant_of" in t.user_attrs:  # exploit.py: queued as a variant of that trial's student
            rec["variant_of"] = t.user_attrs["variant_of"]
        records.append(rec)
    frame = pd.DataFrame.from_records(records)
    atomic_write_text(rd.trials_csv, frame.to_csv(index=False))
    if "feasible" in frame:
        done = frame[(frame["state"] == "COMPLETE") & (frame["feasible"] == True)]  # noqa: E712
        front_ids = {r["trial"] for r in pareto.front(done.to_dict("records"), pareto.for_budget(budget))}
        atomic_write_text(rd.pareto_csv, done[done["trial"].isin(front_ids)].to_csv(index=False))


def save_run_inputs(rd: RunDir, prepared, budget: dict, target: Target, backend) -> None:
    """What `select` and `export` need later without re-preparing the task (the flow adds its own: a tokenizer,
    the evidence of the quality bound, its workload)."""
    common = {"target": target.name, "budget": budget, "task": prepared.task.source,
              "latency": target.device.latency, "threads": target.device.threads,
              "family": prepared.family.name, "backend": backend.name, "artifact_name": backend.artifact_name,
              "teacher_shape": asdict(prepared.family.shape_of(prepared.teacher)),
              "runner": asdict(target.device.runner) if target.device.runner else None}
    extra = flows.of_budget(budget).run_inputs(rd, prepared, target)
    if rd.budget_json.is_file() and "replan_of" in rd.saved():  # a replan folder resumed with new trials stays one
        common["replan_of"] = rd.saved()["replan_of"]
    atomic_write_json(rd.budget_json, {**common, **extra})


def evidence(rd: RunDir, trial: int | None) -> dict | None:
    """A classification trial's predictions, the labels and the teacher's predictions (the paired accuracy
    bound); None where they were not stored. trial None: the teacher's."""
    own = rd.teacher_predictions if trial is None else rd.predictions(trial)
    if not (rd.labels.is_file() and own.is_file()):
        return None
    out = {"labels": read_npy(rd.labels), "predictions": read_npy(own)}
    if rd.teacher_predictions.is_file():
        out["teacher_predictions"] = read_npy(rd.teacher_predictions)
    if rd.slices.is_file():  # each validation example's slice (a task with slices)
        out["slices"] = read_npy(rd.slices)
    return out


def vouching(rd: RunDir, budget: dict, teacher: dict, latency_later: bool = False):
    """row -> the reasons its bounds miss a budget (confidence.py), for pareto.select. latency_later: a measured
    latency is bounded by select's re-measure (the search's runs are too few to bound a p99), not here."""
    skip = for_budget(budget)[1].name if latency_later else None

    def vouch(row: dict) -> list[str]:
        bounds = row_bounds(rd, row, budget, teacher)
        return confidence.problems({k: v for k, v in bounds.items() if k != skip}, budget)
    return vouch


def row_bounds(rd: RunDir, row: dict, budget: dict, teacher: dict) -> dict:
    return confidence.bounds(row["metrics"], teacher, budget, evidence(rd, row["trial"]))


def importances(study, budget: dict | None = None) -> dict:
    """PED-ANOVA importance of each knob for reaching a good quality objective (Optuna's default evaluator,
    which ranks knobs for *low* targets: hence -accuracy, +KLD); empty until there are enough varied trials."""
    from .objectives import quality

    sign = quality(budget or {}).sign
    import warnings

    import optuna

    try:
        with warnings.catch_warnings():  # "few trials per regime" notes: the page says how many trials there are
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study, target=lambda t: -sign * t.values[0])
    except (ValueError, RuntimeError):  # too few completed trials, or no knob varied yet
        return {}


def load_study(run_dir: Path):
    from . import storage

    return storage.load(RunDir(run_dir))


def finish(study, rd: RunDir, policy: str = "accuracy", log=print) -> dict:
    """Select (policy), write selected.json and dashboard.html, copy the chosen artifact to model/."""
    saved = rd.saved()
    budget, target_name = saved["budget"], saved["target"]
    teacher = read_json(rd.teacher_json)  # read before anything is written: a damaged one is said first
    write_tables(study, rd, budget)  # always from the storage: a crash may have cut the last rewrite short
    rows = completed_rows(study, budget)
    choice = select_confirmed(rows, rd, saved, policy, log)
    if rows and not any(pareto.feasible(r["metrics"], budget) for r in rows):  # say what it would take
        trials = study.get_trials(deepcopy=False)
        spent = sum(t.user_attrs.get("elapsed_s", 0.0) for t in trials)
        promoted = sum(t.user_attrs.get("rung") == 1 and not {"same_recipe_as_trial", "variant_of"} & set(t.user_attrs)
                       for t in trials)  # students trained further (a reused trial or a variant trained nothing)
        choice["why"] = choice["why"] + budget_cost.out_of_reach(rows, budget, spent, promoted)
    sel = choice["selected"]
    selected = {
        "trial": sel["trial"] if sel else None, "params": sel["params"] if sel else None,
        "metrics": {k: sel["metrics"][k] for k in summary_keys(budget)} if sel else None,
        "budget": budget, "meets_budget": choice["meets_budget"],
        # one-sided bounds at budget["confidence"] and how each was obtained: what "meets" rests on
        "bounds": row_bounds(rd, sel, budget, teacher) if sel else None,
        "teacher": {k: teacher[k] for k in summary_keys(budget)}, "why": choice["why"], "policy": policy,
        "budget_cost": budget_cost.summary(rows, budget),
        "target": target_name, "model_dir": None,
    }
    line = _binding_bound_text(selected["bounds"], budget)
    if line:
        selected["why"].append(line)
    if sel:
        selected["training"] = training_of(study.trials[sel["trial"]].user_attrs)
        solver = study.trials[sel["trial"]].user_attrs.get("precision_solver")
        if solver:  # what ships per layer: the label says only "solver"
            selected["precision"] = solver
    if sel and saved.get("replan_of"):  # a replan numbers its trials afresh: name the source run's trial too
        origin = study.trials[sel["trial"]].user_attrs.get("replan_of_trial")
        selected["replan_of"] = {"run": saved["replan_of"], "trial": origin}
        if origin is not None:
            log(f"trial {sel['trial']} here is trial {origin} of {saved['replan_of']}")
    if sel and choice["meets_budget"]:
        selected["model_dir"] = str(atomic_replace_dir(lambda tmp: copy_model(sel, rd, saved["classes"], tmp),
                                                       rd.model_dir))
    atomic_write_json(rd.selected_json, selected)
    info = report.front_info(rows, budget, teacher, selected["trial"], importances(study, budget))
    report.render([(rd.name, info)], rd.dashboard, f"{target_name}: {len(rows)} completed trials")
    log(summary_table(selected, budget))
    log(f"results in {rd.root}: study.db trials.csv pareto.csv selected.json dashboard.html"
        + (" model/" if selected["model_dir"] else ""))
    return selected


def _binding_bound_text(bounds: dict | None, budget: dict) -> str | None:
    """Which slice binds at the confidence bound (what shipping rests on), and by how much."""
    limits = slice_limits(budget)
    if not bounds or not limits or any(bounds.get(x.key, {}).get("bound") is None for x in limits):
        return None
    x = pareto.binding_slice({k: b["bound"] for k, b in bounds.items()}, budget)
    margin = -x.objective.violation(bounds[x.key]["bound"], x.limit)
    size = f"{margin * 100:+.2f} pts" if x.objective.unit == "fraction" else f"{margin:+.4f} {x.objective.unit}"
    verdict = "every slice's bound within its limit" if all(bounds[y.key]["meets"] for y in limits) else \
        "not every slice's bound within its limit"
    return (f"slices at {budget.get('confidence', confidence.DEFAULT_CONFIDENCE):.0%} confidence: {verdict}; "
            f"binding slice {x.slice}: bound {bounds[x.key]['bound']:.4f} vs limit {x.limit:.4f} ({size})")


TRAINING_KEYS = ("distill_examples", "distill_steps", "distill_s", "rung", "rung_reason", "rung1_training")


def training_of(attrs: dict) -> dict:
    """What training a trial got (rungs.py): examples distilled on, the rung it reached and why, the second rung's
    early stopping; the recipe's epochs are in its params."""
    return {k: v for k, v in attrs.items() if k in TRAINING_KEYS or k.startswith("rung0_")}


def select_confirmed(rows: list[dict], rd: RunDir, saved: dict, policy: str, log=print) -> dict:
    """Select; for a measured device ship only what still meets the latency and memory budgets when
    measured again in a fresh process with more runs, otherwise drop it and select again, saying so in
    `why` (whose margins line is the search's measurement; the re-measured figures follow it)."""
    from . import backends
    from .measure import latency

    budget, notes, left = saved["budget"], [], list(rows)
    level = budget.get("confidence", confidence.DEFAULT_CONFIDENCE)
    backend = backends.get(saved.get("backend", backends.DEFAULT))
    teacher = read_json(rd.teacher_json)
    vouch = vouching(rd, budget, teacher, latency_later=saved["latency"] == "measured")
    while True:
        choice = pareto.select(left, budget, policy, vouch)
        if not choice["meets_budget"] or saved["latency"] != "measured":
            return {**choice, "why": choice["why"] + notes}
        row = choice["selected"]
        log(f"re-measuring trial {row['trial']} in a fresh process ...")
        runner = latency.Runner(**saved["runner"]) if saved.get("runner") else None
        fresh, noisy, detail = backend.remeasure(rd.artifact(row["trial"]), {
            **saved, "candidate_shape": row["metrics"].get("shape")}, runner, level)
        if fresh["memory_mb"] is None:  # the runtime reports no peak memory: the search's figure stands
            fresh["memory_mb"] = row["metrics"]["memory_mb"]
        lat_name = for_budget(budget)[1].name
        first = row["metrics"][lat_name]
        problems = [f"{o.name} {fresh[o.name]:.2f} {o.unit} > budget {budget[o.budget_key]:g} {o.unit}"
                    for o in constraints(budget)[1:] if o.violation(fresh[o.name], budget[o.budget_key]) > 0]
        upper = fresh.get(f"{lat_name}_upper")
        if upper is None:  # nothing unvouched ships
            problems.append(f"{lat_name}: no upper bound ({fresh['latency_bound_method']})")
        elif upper > budget[for_budget(budget)[1].budget_key]:
            problems.append(f"{lat_name} upper bound {upper:.2f} ms > budget ({fresh['latency_bound_method']})")
        problems += ["too noisy to trust"] if noisy else []
        if not problems:
            row["metrics"] = {**row["metrics"], **fresh}
            notes.append(f"re-measured in a fresh process ({detail}): {lat_name} {fresh[lat_name]:.2f} ms (the search "
                         f"measured {first:.2f} ms), peak memory {fresh['memory_mb']:.1f} MB: still within budget")
            return {**choice, "why": choice["why"] + notes}
        notes.append(f"trial {row['trial']} dropped: re-measured {'; '.join(problems)} "
                     f"(the search measured {lat_name} {first:.2f} ms)")
        left = [r for r in left if r["trial"] != row["trial"]]


def copy_model(row: dict, rd: RunDir, classes: list, out: Path) -> Path:
    """The exact artifact that was measured, its tokenizer (where the task has one) and the recipe beside it, into a
    new folder."""
    if rd.tokenizer_dir.is_dir():
        shutil.copytree(rd.tokenizer_dir, out)
    else:
        out.mkdir(parents=True)
    artifact = rd.artifact(row["trial"])
    shutil.copy2(artifact, out / artifact.name)
    (out / "recipe.json").write_text(json.dumps({"trial": row["trial"], "params": row["params"],
                                                 "metrics": row["metrics"], "classes": classes},
                                                indent=2, default=str))
    return out


def summary_table(selected: dict, budget: dict) -> str:
    t, s = selected["teacher"], selected["metrics"]
    lines = [f"{'':16s}{'teacher (fp32)':>18s}{'selected' + (' #' + str(selected['trial']) if s else ''):>18s}"
             f"{'budget':>22s}"]
    mark = lambda m, key: ("ok " if pareto.violations(m, budget)[key] <= 0 else "OVER") if m else ""  # noqa: E731
    for o in constraints(budget):
        fmt = "{:.2f}" if o.unit in ("ms", "MB") else "{:.4f}"
        limit = f"{'>=' if o.sign > 0 else '<='} {fmt.format(budget[o.budget_key])}"
        tv = f"{fmt.format(t[o.name])} {mark(t, o.name)}"
        sv = f"{fmt.format(s[o.name])} {mark(s, o.name)}" if s else "-"
        lines.append(f"{o.name:16s}{tv:>18s}{sv:>18s}{limit:>22s}")
    for x in slice_limits(budget):  # the quality objective on each slice, against that slice's limit
        tv = f"{t[x.key]:.4f} {mark(t, x.key)}" if x.key in t else "-"
        sv = f"{s[x.key]:.4f} {mark(s, x.key)}" if s else "-"
        lines.append(f"{'  @' + x.slice:16s}{tv:>18s}{sv:>18s}{('>= ' if x.objective.sign > 0 else '<= ') + f'{x.limit:.4f}':>22s}")
    p50 = for_budget(budget)[1].p50
    lines.append(f"{p50:16s}{t[p50]:>18.2f}{(s[p50] if s else float('nan')):>18.2f}")
    lines.append(f"latency: {t['latency_source']}")
    lines += ["why: " + selected["why"][0]] + ["     " + w for w in selected["why"][1:]]
    if selected.get("bounds"):
        lines.append(f"bounds ({budget.get('confidence', confidence.DEFAULT_CONFIDENCE):.0%} one-sided): "
                     + "; ".join(bound_text(name, b) for name, b in selected["bounds"].items()))
    if selected.get("budget_cost"):
        lines += ["what the budget buys: " + next(iter(selected["budget_cost"].values()))["text"]]
        lines += ["                      " + c["text"] for c in list(selected["budget_cost"].values())[1:]]
    return "\n".join(lines)


def bound_text(name: str, b: dict) -> str:
    if b["bound"] is None:
        return f"{name}: none ({b['method']})"
    o = next(o for o in (*QUALITY.values(), *LATENCY.values()) if o.name == name.split(SLICE_SEP)[0])
    op = ">=" if o.sign > 0 else "<="
    return f"{name} {op} {b['bound']:.4g}{'' if o.unit == 'fraction' else ' ' + o.unit} ({b['method']})"

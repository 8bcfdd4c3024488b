"""What a run leaves in results/<run>/: trials.csv, pareto.csv, selected.json, dashboard.html, model/."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from optuna.trial import TrialState

from . import pareto, report
from .families.base import ModelShape
from .objectives import ACCURACY, Objective
from .run_dir import RunDir, atomic_replace_dir, atomic_write_json, atomic_write_text
from .target import Target

SUMMARY_KEYS = ("accuracy", "memory_mb", "p50_latency_ms", "p99_latency_ms", "latency_source")
METRIC_COLUMNS = ("accuracy", "macro_f1", "memory_mb", "weight_mb", "activation_mb_estimated", "peak_rss_mb",
                  "p50_latency_ms", "p99_latency_ms", "latency_spread", "latency_noisy", "latency_source", "weight_sparsity", "parameters",
                  "predicted_memory_mb", "predicted_p99_latency_ms", "elapsed_s", "train_device")


def resolved_budget(target: Target, teacher_quality: float, quality: Objective = ACCURACY) -> dict:
    b = target.budget
    return {"memory_mb": b.memory_mb, "p99_latency_ms": b.p99_latency_ms, "quality": quality.name,
            quality.budget_key: round(b.accuracy_floor.resolve(teacher_quality), 6),
            f"{quality.budget_key}_rule": b.accuracy_floor.describe()}


def budget_line(budget: dict) -> str:
    return (f"memory <= {budget['memory_mb']:g} MB, p99 <= {budget['p99_latency_ms']:g} ms, "
            f"accuracy >= {budget['accuracy_floor']:.4f} ({budget['accuracy_floor_rule']})")


def metrics_line(name: str, m: dict) -> str:
    src = "" if m["latency_source"] == "measured" else f" ({m['latency_source']})"
    src += " NOISY" if m.get("latency_noisy") else ""
    return (f"{name}{' ' if name else ''}acc {m['accuracy']:.4f}  p50 {m['p50_latency_ms']:.2f} ms  "
            f"p99 {m['p99_latency_ms']:.2f} ms{src}  mem {m['memory_mb']:.2f} MB")


def completed_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        rows.append({"trial": t.number, "params": dict(t.params), "label": t.user_attrs.get("label", ""),
                     "metrics": {k: t.user_attrs[k] for k in METRIC_COLUMNS if k in t.user_attrs}})
    return rows


def write_tables(study, rd: RunDir, budget: dict) -> None:
    records = []
    for t in study.get_trials(deepcopy=False):
        rec = {"trial": t.number, "state": t.state.name, "label": t.user_attrs.get("label", ""),
               **{f"params_{k}": v for k, v in t.params.items()},
               **{k: t.user_attrs.get(k) for k in METRIC_COLUMNS}}
        if t.state == TrialState.COMPLETE:
            rec["feasible"] = pareto.feasible(t.user_attrs, budget)
        rec["reason"] = t.user_attrs.get("reason", "")
        records.append(rec)
    frame = pd.DataFrame.from_records(records)
    atomic_write_text(rd.trials_csv, frame.to_csv(index=False))
    if "feasible" in frame:
        done = frame[(frame["state"] == "COMPLETE") & (frame["feasible"] == True)]  # noqa: E712
        front_ids = {r["trial"] for r in pareto.front(done.to_dict("records"), pareto.for_budget(budget))}
        atomic_write_text(rd.pareto_csv, done[done["trial"].isin(front_ids)].to_csv(index=False))


def save_run_inputs(rd: RunDir, prepared, budget: dict, target: Target, backend) -> None:
    """What `select` and `export` need later without re-preparing the task."""
    atomic_replace_dir(prepared.tokenizer.save_pretrained, rd.tokenizer_dir)
    wl = target.workload
    atomic_write_json(rd.budget_json, {
        "target": target.name, "budget": budget, "classes": prepared.classes, "task": prepared.task.source,
        "max_length": prepared.task.max_length, "latency": target.device.latency, "threads": target.device.threads,
        "batch_size": wl.batch_size, "sequence_length": wl.sequence_length,
        "family": prepared.family.name, "hf_auto_class": prepared.family.hf_auto_class,
        "backend": backend.name, "artifact_name": backend.artifact_name,
        "teacher_shape": asdict(prepared.family.shape_of(prepared.teacher)),
        "runner": asdict(target.device.runner) if target.device.runner else None})


def importances(study) -> dict:
    """PED-ANOVA importance of each knob for reaching high accuracy (Optuna's default evaluator, which
    ranks knobs for *low* targets: hence -accuracy); empty until there are enough varied trials."""
    import warnings

    import optuna

    try:
        with warnings.catch_warnings():  # "few trials per regime" notes: the page says how many trials there are
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study, target=lambda t: -t.values[0])
    except (ValueError, RuntimeError):  # too few completed trials, or no knob varied yet
        return {}


def load_study(run_dir: Path):
    from . import storage

    return storage.load(RunDir(run_dir))


def finish(study, rd: RunDir, policy: str = "accuracy", log=print) -> dict:
    """Select (policy), write selected.json and dashboard.html, copy the chosen artifact to model/."""
    saved = rd.saved()
    budget, target_name = saved["budget"], saved["target"]
    write_tables(study, rd, budget)  # always from the storage: a crash may have cut the last rewrite short
    teacher = json.loads(rd.teacher_json.read_text())
    rows = completed_rows(study)
    choice = select_confirmed(rows, rd, saved, policy, log)
    sel = choice["selected"]
    selected = {
        "trial": sel["trial"] if sel else None, "params": sel["params"] if sel else None,
        "metrics": {k: sel["metrics"][k] for k in SUMMARY_KEYS} if sel else None,
        "budget": budget, "meets_budget": choice["meets_budget"],
        "teacher": {k: teacher[k] for k in SUMMARY_KEYS}, "why": choice["why"], "policy": policy,
        "target": target_name, "model_dir": None,
    }
    if sel and choice["meets_budget"]:
        selected["model_dir"] = str(atomic_replace_dir(lambda tmp: copy_model(sel, rd, saved["classes"], tmp),
                                                       rd.model_dir))
    atomic_write_json(rd.selected_json, selected)
    info = report.front_info(rows, budget, teacher, selected["trial"], importances(study))
    report.render([(rd.name, info)], rd.dashboard, f"{target_name}: {len(rows)} completed trials")
    log(summary_table(selected, budget))
    log(f"results in {rd.root}: study.db trials.csv pareto.csv selected.json dashboard.html"
        + (" model/" if selected["model_dir"] else ""))
    return selected


def select_confirmed(rows: list[dict], rd: RunDir, saved: dict, policy: str, log=print) -> dict:
    """Select; for a measured device ship only what still meets the latency and memory budgets when
    measured again in a fresh process with more runs, otherwise drop it and select again, saying so in
    `why` (whose margins line is the search's measurement; the re-measured figures follow it)."""
    from . import backends
    from .measure import latency

    budget, notes, left = saved["budget"], [], list(rows)
    backend = backends.get(saved.get("backend", backends.DEFAULT))
    shape = ModelShape(**saved["teacher_shape"])  # the inputs a student accepts are the teacher's
    while True:
        choice = pareto.select(left, budget, policy)
        if not choice["meets_budget"] or saved["latency"] != "measured":
            return {**choice, "why": choice["why"] + notes}
        row = choice["selected"]
        log(f"re-measuring trial {row['trial']} in a fresh process ...")
        lat = backend.measure_latency(rd.artifact(row["trial"]), shape, saved["batch_size"], saved["sequence_length"],
                                      saved["threads"], rounds=10, runs_per_round=50,
                                      runner=latency.Runner(**saved["runner"]) if saved.get("runner") else None)
        first = row["metrics"]["p99_latency_ms"]
        memory_mb = lat.peak_rss_mb if lat.peak_rss_mb is not None else row["metrics"]["memory_mb"]
        problems = ([f"p99 {lat.p99_ms:.2f} ms > budget {budget['p99_latency_ms']:g} ms"]
                    if lat.p99_ms > budget["p99_latency_ms"] else [])
        problems += ["too noisy to trust"] if lat.noisy else []
        problems += ([f"peak memory {memory_mb:.1f} MB > budget {budget['memory_mb']:g} MB"]
                     if memory_mb > budget["memory_mb"] else [])
        if not problems:
            row["metrics"] = {**row["metrics"], "p50_latency_ms": lat.p50_ms, "p99_latency_ms": lat.p99_ms,
                              "latency_spread": lat.spread, "memory_mb": memory_mb}
            notes.append(f"re-measured in a fresh process ({lat.detail}): p99 {lat.p99_ms:.2f} ms (the search "
                         f"measured {first:.2f} ms), peak memory {memory_mb:.1f} MB: still within budget")
            return {**choice, "why": choice["why"] + notes}
        notes.append(f"trial {row['trial']} dropped: re-measured {'; '.join(problems)} "
                     f"(the search measured p99 {first:.2f} ms)")
        left = [r for r in left if r["trial"] != row["trial"]]


def copy_model(row: dict, rd: RunDir, classes: list, out: Path) -> Path:
    """The exact artifact that was measured, its tokenizer and the recipe beside it, into a new folder."""
    shutil.copytree(rd.tokenizer_dir, out)
    artifact = rd.artifact(row["trial"])
    shutil.copy2(artifact, out / artifact.name)
    (out / "recipe.json").write_text(json.dumps({"trial": row["trial"], "params": row["params"],
                                                 "metrics": row["metrics"], "classes": classes},
                                                indent=2, default=str))
    return out


def summary_table(selected: dict, budget: dict) -> str:
    t, s = selected["teacher"], selected["metrics"]
    lines = [f"{'':16s}{'teacher (fp32)':>18s}{'selected' + (' #' + str(selected['trial']) if s else ''):>18s}"
             f"{'budget':>16s}"]
    mark = lambda m, key: ("ok " if pareto.violations(m, budget)[key] <= 0 else "OVER") if m else ""  # noqa: E731
    for key, label, fmt, limit in (("accuracy", "accuracy", "{:.4f}", f">= {budget['accuracy_floor']:.4f}"),
                                   ("memory_mb", "memory MB", "{:.2f}", f"<= {budget['memory_mb']:g}"),
                                   ("p99_latency_ms", "p99 ms", "{:.2f}", f"<= {budget['p99_latency_ms']:g}")):
        tv = f"{fmt.format(t[key])} {mark(t, key)}"
        sv = f"{fmt.format(s[key])} {mark(s, key)}" if s else "-"
        lines.append(f"{label:16s}{tv:>18s}{sv:>18s}{limit:>16s}")
    lines.append(f"{'p50 ms':16s}{t['p50_latency_ms']:>18.2f}{(s['p50_latency_ms'] if s else float('nan')):>18.2f}")
    lines.append(f"latency: {t['latency_source']}")
    lines += ["why: " + selected["why"][0]] + ["     " + w for w in selected["why"][1:]]
    return "\n".join(lines)

"""What a run leaves in results/<run>/: trials.csv, pareto.csv, selected.json, dashboard.html, model/."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from optuna.trial import TrialState

from . import pareto, report
from .target import Target

SUMMARY_KEYS = ("accuracy", "memory_mb", "p50_latency_ms", "p99_latency_ms", "latency_source")
METRIC_COLUMNS = ("accuracy", "macro_f1", "memory_mb", "weight_mb", "activation_mb_estimated", "peak_rss_mb",
                  "p50_latency_ms", "p99_latency_ms", "latency_spread", "latency_noisy", "latency_source", "weight_sparsity", "parameters",
                  "predicted_memory_mb", "predicted_p99_latency_ms", "elapsed_s")


def resolved_budget(target: Target, teacher_accuracy: float) -> dict:
    b = target.budget
    return {"memory_mb": b.memory_mb, "p99_latency_ms": b.p99_latency_ms,
            "accuracy_floor": round(b.accuracy_floor.resolve(teacher_accuracy), 6),
            "accuracy_floor_rule": b.accuracy_floor.describe()}


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


def write_tables(study, run_dir: Path, budget: dict) -> None:
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
    _atomic_csv(frame, run_dir / "trials.csv")
    if "feasible" in frame:
        done = frame[(frame["state"] == "COMPLETE") & (frame["feasible"] == True)]  # noqa: E712
        front_ids = {r["trial"] for r in pareto.front(done.to_dict("records"))}
        _atomic_csv(done[done["trial"].isin(front_ids)], run_dir / "pareto.csv")


def _atomic_csv(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def save_run_inputs(run_dir: Path, prepared, budget: dict, target: Target) -> None:
    """What `select` and `export` need later without re-preparing the task."""
    prepared.tokenizer.save_pretrained(run_dir / "tokenizer")
    wl = target.workload
    (run_dir / "budget.json").write_text(json.dumps(
        {"target": target.name, "budget": budget, "classes": prepared.classes, "task": prepared.task.source,
         "max_length": prepared.task.max_length, "latency": target.device.latency, "threads": target.device.threads,
         "batch_size": wl.batch_size, "sequence_length": wl.sequence_length,
         "vocab_size": prepared.teacher.config.vocab_size,
         "runner": asdict(target.device.runner) if target.device.runner else None}, indent=2, default=str))


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
    import optuna

    return optuna.load_study(study_name="search", storage=f"sqlite:///{run_dir / 'study.db'}")


def finish(study, run_dir: Path, policy: str = "accuracy", log=print) -> dict:
    """Select (policy), write selected.json and dashboard.html, copy the chosen artifact to model/."""
    saved = json.loads((run_dir / "budget.json").read_text())
    budget, target_name = saved["budget"], saved["target"]
    teacher = json.loads((run_dir / "teacher.json").read_text())
    rows = completed_rows(study)
    choice = select_confirmed(rows, run_dir, saved, policy, log)
    sel = choice["selected"]
    selected = {
        "trial": sel["trial"] if sel else None, "params": sel["params"] if sel else None,
        "metrics": {k: sel["metrics"][k] for k in SUMMARY_KEYS} if sel else None,
        "budget": budget, "meets_budget": choice["meets_budget"],
        "teacher": {k: teacher[k] for k in SUMMARY_KEYS}, "why": choice["why"], "policy": policy,
        "target": target_name, "model_dir": None,
    }
    if sel and choice["meets_budget"]:
        selected["model_dir"] = str(copy_model(sel, run_dir, saved["classes"], run_dir / "model"))
    (run_dir / "selected.json").write_text(json.dumps(selected, indent=2))
    info = report.front_info(rows, budget, teacher, selected["trial"], importances(study))
    report.render([(run_dir.name, info)], run_dir / "dashboard.html",
                  f"{target_name}: {len(rows)} completed trials")
    log(summary_table(selected, budget))
    log(f"results in {run_dir}: study.db trials.csv pareto.csv selected.json dashboard.html"
        + (" model/" if selected["model_dir"] else ""))
    return selected


def select_confirmed(rows: list[dict], run_dir: Path, saved: dict, policy: str, log=print) -> dict:
    """Select; for a measured device ship only what still meets the latency and memory budgets when
    measured again in a fresh process with more runs, otherwise drop it and select again, saying so in
    `why` (whose margins line is the search's measurement; the re-measured figures follow it)."""
    from .measure import latency

    budget, notes, left = saved["budget"], [], list(rows)
    while True:
        choice = pareto.select(left, budget, policy)
        if not choice["meets_budget"] or saved["latency"] != "measured":
            return {**choice, "why": choice["why"] + notes}
        row = choice["selected"]
        log(f"re-measuring trial {row['trial']} in a fresh process ...")
        lat = latency.measure(artifact_path(run_dir, row["trial"]), saved["batch_size"], saved["sequence_length"],
                              saved["threads"], saved["vocab_size"], rounds=10, runs_per_round=50,
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


def artifact_path(run_dir: Path, trial: int) -> Path:
    return run_dir / "trials" / f"{trial:04d}" / "model.onnx"


def copy_model(row: dict, run_dir: Path, classes: list, out: Path) -> Path:
    """The exact artifact that was measured, its tokenizer and the recipe beside it."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(run_dir / "tokenizer", out)
    shutil.copy2(artifact_path(run_dir, row["trial"]), out / "model.onnx")
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

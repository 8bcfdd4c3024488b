"""`python -m search bench techniques`: each compression technique on the default task, measured side by
side against its alternative (same student, same steps, same seed), and the best combined recipe. The `training`
section (`--section training`, for a harder task such as rotten_tomatoes): each way of training a student better
(teacher-labelled unlabelled text, teacher-labelled augmentation, a second rung early-stopped on held-out rows)
against plain distillation on the labelled rows, at equal training steps (same student, same batch: the wall-clock
differs only by text length and the held-out checks; the measured training seconds are in the table).

Every row is an exported onnxruntime artifact: accuracy on the validation split, artifact bytes on disk,
p50/p99 latency and peak memory measured in a fresh process on this machine (the `local_cpu` target).
Writes results/bench/techniques.csv and techniques.md; each comparison's verdict is computed from the
measured numbers, never written by hand.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .. import backends
from ..candidate import Candidate, DistillParams, PruneParams, QuantParams, quant_label
from ..compress import distill
from ..flows.text_classification.pipeline import Context, measure_artifact, run_candidate
from . import summary


@dataclass(frozen=True)
class Setting:
    name: str
    candidate: Candidate | None  # None: the teacher itself, quantized by `quant`
    reference: str | None = None  # fidelity (logit MSE / agreement) is measured against this setting
    quant: QuantParams | None = None
    data: str = "task"  # the distillation text (DATA); another than "task" is built by `variant`
    more_epochs: float = 0.0  # > 0: a second rung of this many epochs, early-stopped on the held-out training rows


DATA = {"task": "the task's distillation text (labelled rows, and its unlabelled text or augmentation)",
        "labelled": "the labelled training rows only (distillation before unlabelled text and augmentation)",
        "augmented": "the labelled rows and AUGMENT_COPIES word-replacement copies of each, labelled by the teacher"}
AUGMENT_COPIES = 2
@dataclass(frozen=True)
class Comparison:
    claim: str
    baseline: str
    challenger: str
    kind: str  # "accuracy": a significantly higher accuracy wins, else lower logit MSE; "memory": smaller at no loss


def default_settings() -> tuple[list[Setting], list[Comparison]]:
    """The settings on the default task (MiniLM-L6 teacher, 6 x 384): a 3-layer full-width student."""
    s = DistillParams(layers=3, hidden=384, heads=12, ffn=1536, epochs=2)
    st = replace(s, vocab="task")
    fp32 = QuantParams(32)

    def c(d=s, p=PruneParams(), q=fp32):
        return Candidate(d, p, q)

    unstr = PruneParams("unstructured", 0.8, recovery_steps=60)
    struc = PruneParams("structured", 0.5, recovery_steps=60)
    two4 = PruneParams("2:4", 0.5, recovery_steps=0)
    combined = Candidate(st, PruneParams("structured", 0.3, recovery_steps=60, iterations=3),
                         QuantParams(4, 32, method="gptq"))
    settings = [
        Setting("teacher fp32", None, quant=fp32),
        Setting("teacher int8 dynamic", None, "teacher fp32", QuantParams(8, None, "dynamic_int8")),
        Setting("teacher w4 g32 rtn", None, "teacher fp32", QuantParams(4, 32)),
        # distilled students: fidelity to the teacher's outputs, what distillation optimises
        Setting("distill: random-init student", c(replace(s, init="random")), "teacher fp32"),
        Setting("distill: teacher-init student", c(), "teacher fp32"),
        Setting("distill: teacher-init + hidden-state transfer", c(replace(s, hidden_weight=1.0)), "teacher fp32"),
        Setting("distill: teacher-init + attention transfer", c(replace(s, attention_weight=1.0)), "teacher fp32"),
        Setting("vocab: task tokens only", c(st)),
        Setting("quant: w8 g32 rtn", c(st, q=QuantParams(8, 32)), "vocab: task tokens only"),
        Setting("quant: int8 dynamic", c(st, q=QuantParams(8, None, "dynamic_int8")), "vocab: task tokens only"),
        Setting("quant: int8 static", c(st, q=QuantParams(8, None, "static_int8")), "vocab: task tokens only"),
        Setting("quant: int8 static + SmoothQuant 0.5", c(st, q=QuantParams(8, None, "static_int8", smooth_alpha=0.5)),
                "vocab: task tokens only"),
        *[Setting(f"quant: w{b} g{g} {m}", c(st, q=QuantParams(b, g, method=m)), "vocab: task tokens only")
          for b, g in ((4, 128), (4, "channel"), (2, 32), (2, 128)) for m in ("rtn", "gptq")],
        Setting("quant: w2 g32 rtn + 60 quantization-aware KD steps", c(st, q=QuantParams(2, 32, qat_steps=60)),
                "vocab: task tokens only"),
        Setting("quant: w2 g32 gptq, most sensitive 1/3 layers at 8 bits",
                c(st, q=QuantParams(2, 32, method="gptq", high_precision_fraction=1 / 3)), "vocab: task tokens only"),
        Setting("quant: w2 g32 gptq, per-layer bits and groups by the solver, 1/3 of the bytes to 8-bit",
                c(st, q=QuantParams(2, 32, method="gptq", high_precision_fraction=1 / 3, precision="solver")),
                "vocab: task tokens only"),
        Setting("prune: unstructured 0.8 one-shot", c(p=unstr), "distill: teacher-init student"),
        Setting("prune: unstructured 0.8 iterative x3", c(p=replace(unstr, iterations=3)),
                "distill: teacher-init student"),
        Setting("prune: unstructured 0.8 global", c(p=replace(unstr, scope="global")), "distill: teacher-init student"),
        Setting("prune: structured 0.5 one-shot", c(p=struc), "distill: teacher-init student"),
        Setting("prune: structured 0.5 iterative x3", c(p=replace(struc, iterations=3)),
                "distill: teacher-init student"),
        Setting("prune: structured 0.5 gradient importance", c(p=replace(struc, importance="gradient")),
                "distill: teacher-init student"),
        Setting("prune: 2:4 magnitude, no recovery", c(p=two4), "distill: teacher-init student"),
        Setting("prune: 2:4 wanda, no recovery", c(p=replace(two4, criterion="wanda")), "distill: teacher-init student"),
        Setting("combined: vocab=task, structured 0.3 x3, w4 g32 gptq", combined, "teacher fp32"),
        Setting("combined: vocab=task, w2 g32 gptq", c(st, q=QuantParams(2, 32, method="gptq")), "teacher fp32"),
    ]
    comparisons = [
        Comparison("teacher-initialised student beats a randomly initialised one (equal steps)",
                   "distill: random-init student", "distill: teacher-init student", "accuracy"),
        Comparison("hidden-state transfer on top of logit KD", "distill: teacher-init student",
                   "distill: teacher-init + hidden-state transfer", "accuracy"),
        Comparison("attention transfer on top of logit KD", "distill: teacher-init student",
                   "distill: teacher-init + attention transfer", "accuracy"),
        Comparison("vocabulary trimming cuts memory without hurting accuracy", "distill: teacher-init student",
                   "vocab: task tokens only", "memory"),
        *[Comparison(f"GPTQ beats round-to-nearest at w{b} g{g}", f"quant: w{b} g{g} rtn", f"quant: w{b} g{g} gptq",
                     "accuracy") for b, g in ((4, 128), (4, "channel"), (2, 32), (2, 128))],
        Comparison("SmoothQuant before static int8", "quant: int8 static", "quant: int8 static + SmoothQuant 0.5",
                   "accuracy"),
        Comparison("quantization-aware recovery beats post-training RTN at w2 g32", "quant: w2 g32 rtn",
                   "quant: w2 g32 rtn + 60 quantization-aware KD steps", "accuracy"),
        Comparison("mixed precision by sensitivity beats uniform 2-bit", "quant: w2 g32 gptq",
                   "quant: w2 g32 gptq, most sensitive 1/3 layers at 8 bits", "accuracy"),
        Comparison("the per-layer solver beats ranking layers by sensitivity (at most the same bytes)",
                   "quant: w2 g32 gptq, most sensitive 1/3 layers at 8 bits",
                   "quant: w2 g32 gptq, per-layer bits and groups by the solver, 1/3 of the bytes to 8-bit",
                   "accuracy"),
        Comparison("iterative pruning beats one-shot (unstructured 0.8, 60 recovery steps each)",
                   "prune: unstructured 0.8 one-shot", "prune: unstructured 0.8 iterative x3", "accuracy"),
        Comparison("iterative pruning beats one-shot (structured 0.5, 60 recovery steps each)",
                   "prune: structured 0.5 one-shot", "prune: structured 0.5 iterative x3", "accuracy"),
        Comparison("global threshold vs layer-wise (unstructured 0.8)", "prune: unstructured 0.8 one-shot",
                   "prune: unstructured 0.8 global", "accuracy"),
        Comparison("gradient importance vs norm importance (structured 0.5)", "prune: structured 0.5 one-shot",
                   "prune: structured 0.5 gradient importance", "accuracy"),
        Comparison("Wanda beats magnitude for 2:4 (no recovery)", "prune: 2:4 magnitude, no recovery",
                   "prune: 2:4 wanda, no recovery", "accuracy"),
    ]
    return settings, comparisons


TRAINING_STEPS = 720  # ~2 epochs over Rotten Tomatoes' 11.4k distillation texts at batch 32; every row gets these


def training_student(teacher) -> DistillParams:
    """Half the teacher's depth at its full width and heads, half its FFN, task vocabulary, pure soft KD at T = 2:
    for MiniLM-L6 (6 x 384, FFN 1536) 3 x 384 with FFN 768, a shape the raspberry_pi5 budget admits at int8."""
    heads = teacher.heads[0]
    return DistillParams(layers=max(1, teacher.layers // 2), hidden=teacher.hidden, heads=heads,
                         ffn=max(1, teacher.ffn[0] // 2), temperature=2.0, alpha=1.0, vocab="task")


def training_settings(sizes: dict[str, int], student: DistillParams,
                      steps: int = TRAINING_STEPS) -> tuple[list[Setting], list[Comparison]]:
    """The training section: the same student (`training_student` of the teacher, shipped as int8) trained `steps`
    steps on each text, so every row costs the same wall-clock up to text lengths; `sizes`: examples per DATA key
    (the epochs that make `steps`). The second rung spends half the steps first, then at most the other half,
    early-stopped on the held-out rows (it may stop sooner: never more steps)."""
    from ..train import BATCH_SIZE, steps_for

    s = student
    q = QuantParams(8, None, "dynamic_int8")

    def epochs(data: str, n_steps: int) -> float:
        e = (n_steps - 0.5) * BATCH_SIZE / sizes[data]  # steps_for rounds up: exactly n_steps
        assert steps_for(sizes[data], e) == n_steps
        return e

    def c(data, n_steps=steps):
        return Candidate(replace(s, epochs=epochs(data, n_steps)), PruneParams(), q)

    base = "train: KD on the labelled rows"
    settings = [
        Setting("teacher fp32", None, quant=QuantParams(32)),
        Setting(base, c("labelled"), "teacher fp32", data="labelled"),
        Setting("train: + teacher-labelled unlabelled text", c("task"), "teacher fp32"),
        Setting(f"train: + teacher-labelled augmentation ({AUGMENT_COPIES} copies)", c("augmented"), "teacher fp32",
                data="augmented"),
        Setting("train: + unlabelled text, half the steps, then a second rung early-stopped", c("task", steps // 2),
                "teacher fp32", more_epochs=epochs("task", steps - steps // 2)),
    ]
    comparisons = [
        Comparison("teacher-labelled unlabelled text beats the labelled rows alone (equal steps)", base,
                   settings[2].name, "accuracy"),
        Comparison("teacher-labelled augmentation beats the labelled rows alone (equal steps)", base,
                   settings[3].name, "accuracy"),
        Comparison("a second rung early-stopped on held-out rows beats one fixed schedule (at most equal steps)",
                   settings[2].name, settings[4].name, "accuracy"),
    ]
    return settings, comparisons


GOAL_RATIO, GOAL_MAX_DROP = 20.0, 0.01  # the bar: >= 20x smaller at <= 1 point lost
SIGNIFICANCE = 0.05  # an accuracy difference decides a claim only when McNemar's exact test says it is real


def mcnemar_p(baseline_right: np.ndarray, challenger_right: np.ndarray) -> tuple[float, int, int]:
    """Exact two-sided McNemar test on the same examples: only the discordant pairs carry information.
    By hand (a binomial tail, five lines) because scipy/statsmodels are not installed for this alone."""
    b = int(np.sum(baseline_right & ~challenger_right))
    c = int(np.sum(~baseline_right & challenger_right))
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n if n else 1.0
    return min(1.0, 2 * tail), b, c


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")[:80]


def variant(ctx: Context, data: str, log=print) -> Context:
    """The run's context distilling on another text (DATA), every other thing equal. The held-out rows stay out of
    every variant's training (they are the second rung's early-stopping set)."""
    import hashlib

    from ..tasks.teacher import prepare

    p = ctx.prepared
    if data == "task":
        return ctx
    if data == "labelled":
        n = len(p.train) - (0 if p.holdout is None else len(p.holdout))  # with_holdout puts these rows first
        key = hashlib.sha256(f"{p.key}:labelled-only".encode()).hexdigest()[:16]
        return replace(ctx, prepared=replace(p, kd_train=p.kd_train.take(slice(0, n)), kd_outputs=p.kd_outputs[:n],
                                             kd_source=None, key=key))
    if data == "augmented":
        task = replace(p.task, unlabelled_path=None, augment_copies=AUGMENT_COPIES)
        made = prepare(task, ctx.cache_dir, log=log)
        return replace(ctx, prepared=made.with_holdout() if p.holdout is not None else made)
    raise ValueError(f"unknown distillation text {data!r}; one of {', '.join(DATA)}")


def measure_setting(ctx: Context, setting: Setting, workdir: Path, log) -> dict:
    """One setting, measured; `ctx` distils on the setting's text (`variant`)."""
    if setting.candidate is None:
        teacher = ctx.prepared.teacher
        path = ctx.backend.build(teacher, setting.quant, workdir, ctx.calibration)
        shape = ctx.family.shape_of(teacher)
        metrics = {**measure_artifact(ctx, path, shape, setting.quant, False), "artifact": str(path)}
        recipe = f"teacher L{shape.layers} h{shape.hidden} {quant_label(setting.quant)}"
    else:
        more = None
        if setting.more_epochs:
            if ctx.prepared.holdout is None:
                raise ValueError(f"{setting.name}: a second rung needs held-out training rows (Prepared.with_holdout)")
            more = distill.MoreTraining(setting.more_epochs, ctx.prepared.holdout, ctx.prepared.holdout_outputs)
        metrics = run_candidate(ctx, setting.candidate, workdir, log=log, more=more)
        recipe = setting.candidate.label()
    return {"setting": setting.name, "recipe": recipe, **metrics}


SECTIONS = {"compression": "Compression techniques, measured side by side",
            "training": "Training a student better, at equal training steps"}


def output_stem(seed: int, section: str = "compression", task: str | None = None) -> str:
    """techniques.* for the compression section on the default task at seed 0; another section, task or seed
    writes beside it instead of replacing it (techniques-training-rotten_tomatoes.*, techniques-seed1.*)."""
    return "-".join(["techniques"] + ([section] if section != "compression" else []) + ([task] if task else [])
                    + ([f"seed{seed}"] if seed else []))


def run(ctx: Context, out_dir: Path, settings: list[Setting] | None = None,
        comparisons: list[Comparison] | None = None, log=print, section: str = "compression",
        contexts: dict[str, Context] | None = None) -> pd.DataFrame:
    """`contexts`: the run's context per distillation text (DATA) where the caller built them already; the others
    are built once, when a setting first needs them."""
    task = ctx.prepared.task
    stem = output_stem(ctx.seed, section, None if task.path is None else task.name)
    if settings is None:
        settings, comparisons = default_settings()
    comparisons = comparisons or []
    contexts = dict(contexts or {})
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, done, failed = [], [], []
    for i, setting in enumerate(settings):
        t0 = time.perf_counter()
        log(f"[{i + 1}/{len(settings)}] {setting.name}")
        try:
            if setting.data not in contexts:
                contexts[setting.data] = variant(ctx, setting.data, log)
            r = measure_setting(contexts[setting.data], setting, out_dir / stem / _slug(setting.name), log)
        except Exception as exc:  # one broken setting must not cost the other measurements
            failed.append((setting.name, f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
            log(f"    FAILED: {failed[-1][1]}")
            continue
        rows.append(r)
        done.append(setting)
        log(f"    accuracy {r['accuracy']:.4f}  {Path(r['artifact']).stat().st_size / 1e6:.2f} MB  "
            f"p50 {r['p50_latency_ms']:.2f} ms  p99 {r['p99_latency_ms']:.2f} ms  ({time.perf_counter() - t0:.0f} s)")
    if not rows:
        raise RuntimeError("every technique setting failed: " + "; ".join(f"{n}: {e}" for n, e in failed))
    frame, preds = _with_outputs(table(rows, done), done, ctx.prepared.val, ctx.threads, ctx.backend)
    frame.to_csv(out_dir / f"{stem}.csv", index=False)
    preds.to_csv(out_dir / f"{stem}-predictions.csv", index=False)
    verdicts = judge(frame, comparisons, preds, size_goal=section == "compression")
    md = markdown(frame, verdicts, len(ctx.prepared.val), failed, ctx.seed,
                  f"{SECTIONS[section]} ({'default task' if task.path is None else task.name})")
    summary.write(out_dir / f"{stem}.md", md, f"{ctx.threads} training, {ctx.target.device.threads} measuring latency")
    log(md)
    return frame


def rerender(out_dir: Path, settings: list[Setting], comparisons: list[Comparison], val, threads: int = 2,
             seed: int = 0, log=print, section: str = "compression", task: str | None = None) -> None:
    """Judge and write the markdown again from the CSV's measurements and the saved artifacts (no
    re-training): predictions and fidelity are recomputed against the settings' current references. `task`:
    a task file's name (None: the default task)."""
    stem = output_stem(seed, section, task)
    frame = pd.read_csv(out_dir / f"{stem}.csv")
    if "artifact" not in frame.columns:  # written before the column existed: the artifacts sit by name
        name = backends.get().artifact_name
        frame.insert(2, "artifact", [str(out_dir / stem / _slug(n) / name) for n in frame["setting"]])
    frame, preds = _with_outputs(frame, settings, val, threads, backends.get())
    frame.to_csv(out_dir / f"{stem}.csv", index=False)
    preds.to_csv(out_dir / f"{stem}-predictions.csv", index=False)
    md = markdown(frame, judge(frame, comparisons, preds, size_goal=section == "compression"), len(val), seed=seed,
                  title=f"{SECTIONS[section]} ({task or 'default task'})")
    summary.write(out_dir / f"{stem}.md", md, f"{threads} scoring the saved artifacts (latency from the CSV)")
    log(md)


def table(rows: list[dict], settings: list[Setting]) -> pd.DataFrame:
    """The CSV: one row per setting, ratios against the fp32 teacher artifact (the first teacher row)."""
    teacher = next((r for r, s in zip(rows, settings) if s.candidate is None and s.quant.bits == 32), rows[0])
    teacher_bytes = Path(teacher["artifact"]).stat().st_size
    out = []
    for r, s in zip(rows, settings):
        size = Path(r["artifact"]).stat().st_size
        out.append({"setting": s.name, "recipe": r["recipe"], "artifact": r["artifact"],
                    "accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
                    "accuracy_delta": r["accuracy"] - teacher["accuracy"], "artifact_mb": size / 1e6,
                    "weight_mb": r["weight_mb"], "compression_ratio": teacher_bytes / size,
                    "p50_ms": r["p50_latency_ms"], "p99_ms": r["p99_latency_ms"], "peak_rss_mb": r["peak_rss_mb"],
                    "latency_source": r["latency_source"], "latency_noisy": r["latency_noisy"],
                    "weight_sparsity": r.get("weight_sparsity", 0.0),
                    # training cost (students only; a student loaded from the cache reports its load time)
                    "distill_examples": r.get("distill_examples"), "distill_s": r.get("distill_s"),
                    "distill_steps": r.get("distill_steps")})
    return pd.DataFrame(out)


def _with_outputs(frame: pd.DataFrame, settings: list[Setting], val, threads: int, backend):
    """Each artifact's validation outputs (the classifier's scores), computed once: fidelity columns for
    the CSV, and each setting's predicted class per example (beside the labels) for the significance tests."""
    outputs = {name: backend.outputs(Path(path), val, threads) for name, path in zip(frame["setting"], frame["artifact"])}
    preds = pd.DataFrame({"label": val.labels.numpy(), **{name: lg.argmax(-1) for name, lg in outputs.items()}})
    return with_fidelity(frame, settings, outputs), preds


def with_fidelity(frame: pd.DataFrame, settings: list[Setting], outputs: dict) -> pd.DataFrame:
    """Per row: logit MSE (mean and median per example) and agreement with its reference setting's
    artifact on the validation split; blank where the row has no reference or it was not measured."""
    reference = {s.name: s.reference for s in settings}
    cols = {"reference": [], "logit_mse_vs_reference": [], "median_logit_mse_vs_reference": [],
            "agreement_vs_reference": []}
    for name in frame["setting"]:
        ref = reference.get(name)
        values = [ref, math.nan, math.nan, math.nan]
        if ref in outputs:
            a, b = outputs[name], outputs[ref]
            per_example = np.mean((a - b) ** 2, axis=-1)
            values[1:] = [float(per_example.mean()), float(np.median(per_example)),
                          float(np.mean(a.argmax(-1) == b.argmax(-1)))]
        for col, v in zip(cols, values):
            cols[col].append(v)
    return frame.drop(columns=[c for c in cols if c in frame.columns]).assign(**cols)


def judge(frame: pd.DataFrame, comparisons: list[Comparison], preds: pd.DataFrame | None = None,
          size_goal: bool = True) -> list[dict]:
    """Verdicts from the numbers. An accuracy difference decides only when it is significant (exact
    McNemar test on the paired validation predictions, p < 0.05); otherwise accuracy is a tie, broken by
    fidelity to the shared reference: the median per-example logit MSE (the mean is shown too; measured
    here, a handful of near-boundary examples dominate the mean). Without predictions, any accuracy
    difference decides. A memory claim needs a smaller artifact at <= 1 example lost."""
    rows = {r["setting"]: r for r in frame.to_dict("records")}

    def mse(r):
        return f"{r['median_logit_mse_vs_reference']:.2e} (mean {r['logit_mse_vs_reference']:.2e})"

    out = []
    for c in comparisons:
        if c.baseline not in rows or c.challenger not in rows:
            continue
        b, ch = rows[c.baseline], rows[c.challenger]
        d_acc = ch["accuracy"] - b["accuracy"]
        acc = f"accuracy {b['accuracy']:.4f} -> {ch['accuracy']:.4f} ({100 * d_acc:+.2f} pts"
        significant = abs(d_acc) > 1e-9
        if preds is not None and c.baseline in preds and c.challenger in preds:
            p, n_b, n_c = mcnemar_p((preds[c.baseline] == preds["label"]).to_numpy(),
                                    (preds[c.challenger] == preds["label"]).to_numpy())
            significant = p < SIGNIFICANCE
            acc += f"; {n_b} vs {n_c} examples only one gets right, McNemar p = {p:.2g}"
        acc += ")"
        has_fidelity = not (math.isnan(b["median_logit_mse_vs_reference"])
                            or math.isnan(ch["median_logit_mse_vs_reference"]))
        if c.kind == "memory":
            holds = ch["artifact_mb"] < b["artifact_mb"] and d_acc >= -0.0012  # at most one example of ~900
            why = f"{b['artifact_mb']:.1f} -> {ch['artifact_mb']:.1f} MB, accuracy {100 * d_acc:+.2f} pts"
        elif significant:
            holds = d_acc > 0
            why = acc + (f"; median logit MSE {mse(b)} -> {mse(ch)}" if has_fidelity else "")
        elif has_fidelity:
            holds = ch["median_logit_mse_vs_reference"] < b["median_logit_mse_vs_reference"]
            why = f"{acc}: a tie, so fidelity decides; median logit MSE vs {ch['reference']} {mse(b)} -> {mse(ch)}"
        else:
            holds = False
            why = f"{acc}: inconclusive, no fidelity reference"
        out.append({"claim": c.claim, "holds": bool(holds), "evidence": why})
    if not size_goal:  # the training section compares ways to train one student, not sizes
        return out
    within = frame[frame["accuracy_delta"] >= -GOAL_MAX_DROP]
    best = within[within["compression_ratio"] >= GOAL_RATIO]
    # the smallest artifact within the accuracy bound; among equally small ones, the most accurate
    top = within.sort_values(["compression_ratio", "accuracy"], ascending=False).iloc[0] if len(within) else None
    out.append({"claim": f">= {GOAL_RATIO:g}x smaller than the fp32 teacher at <= {100 * GOAL_MAX_DROP:g} pt lost",
                "holds": not best.empty,
                "evidence": "no setting within the accuracy bound" if top is None else
                f"{top['setting']}: {top['compression_ratio']:.1f}x, {100 * top['accuracy_delta']:+.2f} pts"})
    return out


def markdown(frame: pd.DataFrame, verdicts: list[dict], n_val: int, failed: list | None = None,
             seed: int = 0, title: str = f"{SECTIONS['compression']} (default task)") -> str:
    teacher = float((frame["accuracy"] - frame["accuracy_delta"]).iloc[0])  # every row's delta is to the teacher
    se = 100 * math.sqrt(teacher * (1 - teacher) / n_val)
    lines = [f"# {title}", "",
             f"Accuracy on {n_val} validation examples (one example = {100 / n_val:.2f} pts; binomial standard "
             f"error near the teacher's {100 * teacher:.1f}% = {se:.2f} pts: differences of a few examples are "
             "noise). Latency and peak "
             "memory: the artifact in a fresh onnxruntime process on this machine (1 thread, batch 1, 128 tokens). "
             "Ratio: the fp32 teacher artifact's bytes / this artifact's bytes. Logit MSE: per validation example "
             "against the row's reference (the teacher for distilled students; the same student before pruning "
             "or quantization otherwise), median and mean. "
             f"A claim is judged on accuracy when the difference is significant (exact McNemar test on the "
             f"paired predictions, p < {SIGNIFICANCE}); otherwise on the median logit MSE. Seed {seed} "
             "(distillation, recovery and data order).", "",
             "## Claims", "", "| claim | holds | evidence |", "|---|---|---|"]
    lines += [f"| {v['claim']} | {'yes' if v['holds'] else '**no**'} | {v['evidence']} |" for v in verdicts]
    lines += ["", "## All settings", "",
              "| setting | recipe | accuracy | Δ vs teacher (pts) | artifact MB | ratio | p50 ms | p99 ms | "
              "peak RSS MB | logit MSE vs ref: median (mean) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in frame.iterrows():
        mse = "" if math.isnan(r["logit_mse_vs_reference"]) else \
            f"{r['median_logit_mse_vs_reference']:.2e} ({r['logit_mse_vs_reference']:.2e})"
        noisy = " (noisy)" if r["latency_noisy"] else ""
        rss = "" if r["peak_rss_mb"] is None or pd.isna(r["peak_rss_mb"]) else f"{r['peak_rss_mb']:.0f}"
        lines.append(f"| {r['setting']} | {r['recipe']} | {r['accuracy']:.4f} | {100 * r['accuracy_delta']:+.2f} | "
                     f"{r['artifact_mb']:.2f} | {r['compression_ratio']:.1f}x | {r['p50_ms']:.2f}{noisy} | "
                     f"{r['p99_ms']:.2f} | {rss} | {mse} |")
    if failed:
        lines += ["", "## Failed settings (not measured)", ""] + [f"- {name}: {error}" for name, error in failed]
    return "\n".join(lines) + "\n"

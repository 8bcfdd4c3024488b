"""`python -m search bench llm` (the causal-LM kind's own benchmark): the teacher, every stock llama.cpp preset of it
(made by llama.cpp's own quantizer, without and with an importance matrix), and the search's mixes (a GGML type per
tensor class chosen by measured sensitivity and an exact solver, backends/llama_cpp/mixes.py), all measured in one
run the same way: file size, bits per weight, quality against the fp32 teacher on the held-out windows, speed and
peak memory in a fresh process. Writes results/bench/llm.csv, llm.md and llm.html (KLD against size, presets
marked).

This step compares quantization alone, on the teacher's full shape; depth and width cuts join in the search. On the
built-in SmolLM2 teacher two rows are marked: its linear weights lie on a Q4_1 grid (so Q4_1 is falsely lossless;
the search never uses it there) and its embedding on a Q8_0 grid."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ...backends import llama_cpp as lc
from ...backends.llama_cpp import gguf_file, mixes, quantize
from ...compress import imatrix as imatrix_mod
from ...locks import file_lock
from ...objectives import slice_key
from ...bench import summary
from ...run_dir import JsonCache as Rows  # measured rows, kept as they are measured
from . import task as lm
from .pipeline import sweep_windows

COLUMNS = ("setting", "kind", "measured", "bits_per_weight", "file_mb", "peak_rss_mb", "kld_mean", "kld_mean_se", "kld_p99",
           "top1_agreement", "perplexity", "perplexity_se", "prefill_tok_s", "decode_tok_s", "ttft_ms",
           "tpot_p99_ms", "types", "note")
# Types that hold the teacher's own grid exactly: the built-in SmolLM2 ships as Q4_1 (32-blocks, scale + min), and
# Q5_1 holds every Q4_1 block exactly (half the step, 31 levels), which llama.cpp's min/scale search finds: both
# are falsely lossless there. Types with per-32 scale + min inside 256-blocks (Q4_K, Q5_K) come close to that
# grid (Q4_K on FFN down measured better than Q6_K). Presets that use the exact ones are marked and not graded;
# the near ones are open to presets and to the search's mixes alike, and marked wherever used.
TEACHER_GRIDS = {"smollm2": ("Q4_1", "Q5_1")}
NEAR_GRIDS = {"smollm2": ("Q4_K", "Q5_K")}


def _slice_columns(prepared) -> list[str]:
    """The per-slice columns of a task with slices: each slice's mean KLD and its error across that slice's windows."""
    if prepared.window_slices is None:
        return []
    names = dict.fromkeys(prepared.window_slices.tolist())
    return [c for name in names for c in (slice_key("kld_mean", name), slice_key("kld_mean_se", name))]


def _row(setting: str, kind: str, path: Path, prepared, workload, threads: int, note: str = "") -> dict:
    q = lc.quality(path, prepared.windows, prepared.reference_path, threads, prepared.window_slices)
    s = lc.measure_speed(path, workload, threads, rounds=3)
    types = quantize.tensor_types(path)
    counts = pd.Series([t for t in types.values() if t != "F32"]).value_counts()
    return {"setting": setting, "kind": kind, "measured": "this run", "bits_per_weight": quantize.bits_per_weight(path),
            "file_mb": lc.file_mb(path), "types": " ".join(f"{k}x{v}" for k, v in counts.items()), "note": note,
            **{k: q[k] for k in ("kld_mean", "kld_mean_se", "kld_p99", "top1_agreement", "perplexity",
                                 "perplexity_se", *_slice_columns(prepared))},
            **{k: s[k] for k in ("peak_rss_mb", "prefill_tok_s", "decode_tok_s", "ttft_ms", "tpot_p99_ms")}}


# the presets an importance matrix is built for twice on a task with slices: from the first slice's calibration
# text alone (what a user with English-only text does) and from every slice's (the task's mix)
CALIBRATION_MIX_PRESETS = ("Q4_K_M", "IQ4_NL", "Q3_K_M", "Q2_K")


def output_stem(task) -> str:
    """llm for the built-in teacher's bench; llm-<task> for another task's (both kept side by side)."""
    return "llm" if task.name == lm.default_lm_task().name and not task.slices else f"llm-{task.name}"


def run(out_dir: Path, cache_root: Path, threads: int = 2, workload: lc.LMWorkload | None = None,
        presets: tuple = tuple(quantize.PRESETS), log=print, task=None) -> pd.DataFrame:
    workload = workload or lc.LMWorkload()
    task = task or lm.default_lm_task()
    prepared = lm.prepare(task, cache_root, log=log)
    stem = output_stem(task)
    work = cache_root / "lm" / prepared.key / "bench"
    work.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    grids, near = TEACHER_GRIDS.get(task.name, ()), NEAR_GRIDS.get(task.name, ())
    cache = Rows(work / f"rows-{workload.prompt_tokens}-{workload.gen_tokens}-{workload.context_tokens}-t{threads}"
                        f"{'-sliced' if task.slices else ''}.json")  # rows of a sliced task carry its slice columns
    t0 = time.perf_counter()
    f32 = lc.write_f32(prepared.teacher, work, task.gguf_template)
    log(f"teacher written as F32 GGUF ({lc.file_mb(f32):.0f} MB); importance matrix on "
        f"{len(prepared.calibration_ids)} calibration tokens ...")
    im = imatrix_mod.collect(prepared.teacher, prepared.family, gguf_file.linears_of(prepared.teacher),
                             prepared.calibration_ids, window=task.window_tokens)
    rows = [cache.get("teacher") or cache.put("teacher", _row("teacher F32", "teacher", f32, prepared, workload,
                                                              threads))]
    log(f"teacher: {rows[0]['file_mb']:.1f} MB, perplexity {rows[0]['perplexity']:.2f}")

    def note_for(types: str) -> str:
        on_grid = [g for g in grids if f"{g}x" in types]
        if on_grid:
            return f"uses {'/'.join(on_grid)}, which holds the teacher's own grid: falsely lossless"
        close = [g for g in near if f"{g}x" in types]
        return f"uses {'/'.join(close)}, close to the teacher's grid" if close else ""

    for name in presets:
        for with_im in (False, True):
            mix = quantize.Mix(name, {}, with_im)
            row = cache.get(mix.label())
            if row is None:
                path = lc.build(f32, mix, work / f"{name}{'-imatrix' if with_im else ''}.gguf", im, threads)
                row = cache.put(mix.label(), _row(mix.label(), "preset+imatrix" if with_im else "preset", path,
                                                  prepared, workload, threads))
            row["note"] = note_for(row["types"])
            rows.append(row)
            log(f"{mix.label():18s} {row['file_mb']:6.1f} MB  KLD {row['kld_mean']:.4f}  [{row['types']}]")

    # the search's mixes: sensitivity per class and type, then the exact front, measured at each preset's size
    shapes = mixes.class_shapes_of(f32)
    rows_scored = sweep_windows(prepared)  # the run's sweep windows: the two share one sensitivity cache
    score = lambda path: lc.quality(path, prepared.windows, prepared.reference_path, threads,  # noqa: E731
                                    rows=rows_scored)["kld_mean"]
    # the search takes no credit from the teacher's grid
    # the same cache as a run's (flows/causal_lm/pipeline.py), under its lock: sensitivities do not depend on the speed workload.
    # The search may use what the graded presets use: every type but the exact teacher grids (the near ones, Q4_K
    # and Q5_K, are open to both sides and marked wherever used)
    with file_lock(work.parent / ".run-prepare.lock"):
        sens = mixes.measure_sensitivity(f32, im, shapes, grids, score, work,
                                         Rows(work.parent / "sensitivity.json"), threads, log)
    opts, increase, ref_kld = sens.options, sens.increase, sens.reference_kld
    reference = lc.build(f32, quantize.Mix(mixes.REFERENCE, {}, True), work / "reference.gguf", im, threads)
    predicted = mixes.front(shapes, opts, increase, ref_kld)
    other = lc.file_mb(reference) * 2**20 - sum(c.bytes(mixes.REFERENCE) for c in shapes)  # metadata, norms
    chosen = {}
    for r in rows:
        if r["kind"].startswith("preset"):
            p = mixes.best_within(predicted, int(r["file_mb"] * 2**20 - other))
            if p is not None:
                chosen[mixes.as_mix(p).label()] = p
    for label, p in sorted(chosen.items(), key=lambda kv: kv[1].bytes):
        row = cache.get(label)
        if row is None:
            path = lc.build(f32, mixes.as_mix(p), work / f"search-{len(rows)}.gguf", im, threads)
            row = cache.put(label, _row(label, "search", path, prepared, workload, threads))
        row["note"] = "; ".join(filter(None, [f"predicted KLD {p.kld:.4f} (additive sensitivities)",
                                              note_for(row["types"])]))
        rows.append(row)
        log(f"search {row['file_mb']:6.1f} MB  KLD {row['kld_mean']:.4f} (predicted {p.kld:.4f})  {label}")
    if task.slices:
        rows += _calibration_mix(prepared, f32, im, work, cache, workload, threads, log)
    frame = pd.DataFrame(rows, columns=list(COLUMNS) + _slice_columns(prepared))
    frame.to_csv(out_dir / f"{stem}.csv", index=False)
    _write_md(frame, out_dir / f"{stem}.md", task, workload, threads, time.perf_counter() - t0, stem)
    _write_plot(frame, out_dir / f"{stem}.html", task)
    log((out_dir / f"{stem}.md").read_text())
    return frame


def _calibration_mix(prepared, f32: Path, mixed_im: dict, work: Path, cache, workload, threads: int, log) -> list:
    """The same presets with an importance matrix from the first slice's calibration text alone (as many tokens
    as the mixed one), beside the mixed one's rows: which slices the mix protects, measured."""
    task, first = prepared.task, prepared.task.slices[0]
    text = first.calibration.read(task.text_column, task.source, f"data.slices.{first.name}.calibration")
    ids = np.asarray(prepared.family.encode(prepared.tokenizer, text)[: len(prepared.calibration_ids)])
    if len(ids) < len(prepared.calibration_ids):
        log(f"calibration mix: {first.name} has {len(ids)} calibration tokens, fewer than the mix's "
            f"{len(prepared.calibration_ids)}: compared at unequal size")
    log(f"importance matrix on {len(ids)} tokens of {first.name} alone ...")
    only = imatrix_mod.collect(prepared.teacher, prepared.family, gguf_file.linears_of(prepared.teacher), ids,
                               window=task.window_tokens)
    rows = []
    for name in CALIBRATION_MIX_PRESETS:
        for label, im in ((f"{first.name} only", only), ("mixed", mixed_im)):
            mix = quantize.Mix(name, {}, True)
            key = f"{mix.label()} calibration {label}"
            row = cache.get(key)
            if row is None:
                path = lc.build(f32, mix, work / f"{name}-imatrix-{label.replace(' ', '-')}.gguf", im, threads)
                row = cache.put(key, _row(key, f"calibration {label}", path, prepared, workload, threads))
            rows.append(row)
            log(f"{key:34s} {row['file_mb']:6.1f} MB  KLD {row['kld_mean']:.4f}")
    return rows


def compare(frame: pd.DataFrame) -> list[dict]:
    """Per preset (with and without imatrix): the search's best point at no larger file size, and whether its
    mean KLD is no higher / strictly lower (by more than the two standard errors combined)."""
    search = frame[frame.kind == "search"]
    out = []
    for _, p in frame[frame.kind.str.startswith("preset")].iterrows():
        fit = search[search.file_mb <= p.file_mb]
        best = fit.loc[fit.kld_mean.idxmin()] if len(fit) else None
        margin = ((p.kld_mean_se ** 2 + best.kld_mean_se ** 2) ** 0.5) if best is not None else None
        out.append({"preset": p.setting, "preset_mb": p.file_mb, "preset_kld": p.kld_mean,
                    "search": None if best is None else best.setting,
                    "search_mb": None if best is None else best.file_mb,
                    "search_kld": None if best is None else best.kld_mean,
                    "no_higher": best is not None and best.kld_mean <= p.kld_mean,
                    "strictly_lower": best is not None and best.kld_mean < p.kld_mean - 2 * margin,
                    "note": p.note})
    return out


def _slices_md(frame: pd.DataFrame, task) -> list[str]:
    """Per slice: every row's KLD with its standard error, whether it is within the LM targets' ceiling there, and
    the rows that meet it on the first slice and miss it on another; then the calibration-mix comparison."""
    from ...target import load_target

    target = load_target(CEILING_TARGET)
    ceiling = target.budget.quality_limit.value
    names = [s.name for s in task.slices]
    lines = ["", f"## Per slice: mean KLD ± SE across each slice's {task.eval_windows} windows", "",
             f"Ceiling {ceiling} (the `{target.budget.quality_limit.key}` of targets/{CEILING_TARGET}.yaml); "
             "**bold**: over it.", "",
             "| setting | MB | " + " | ".join(names) + " | within the ceiling on |", "|---|---|" + "---|" * (len(names) + 1)]
    split = []
    for _, r in frame.iterrows():
        cells, within = [], []
        for n in names:
            v, se = r[slice_key("kld_mean", n)], r[slice_key("kld_mean_se", n)]
            cells.append(f"**{v:.4f}** ± {se:.4f}" if v > ceiling else f"{v:.4f} ± {se:.4f}")
            within += [n] if v <= ceiling else []
        lines.append(f"| {r.setting} | {r.file_mb:.1f} | " + " | ".join(cells) + f" | {', '.join(within) or 'none'} |")
        if names[0] in within and len(within) < len(names):
            split.append(f"{r.setting} ({', '.join(n for n in names if n not in within)})")
    lines += ["", (f"Within the ceiling on {names[0]} but over it on another slice: {len(split)} row(s): "
                   + "; ".join(split)) if split else
              f"No row meets the ceiling on {names[0]} and misses it on another slice, at these sizes."]
    mix = frame[frame.kind.str.startswith("calibration")]
    if len(mix):
        lines += ["", f"## Calibration: {names[0]} only against every slice's text (importance matrix; same presets)",
                  "", "| preset | calibration | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for _, r in mix.iterrows():
            lines.append(f"| {r.setting.split(' calibration')[0]} | {r.kind.removeprefix('calibration ')} | "
                         + " | ".join(f"{r[slice_key('kld_mean', n)]:.4f} ± {r[slice_key('kld_mean_se', n)]:.4f}"
                                      for n in names) + " |")
    return lines


CEILING_TARGET = "raspberry_pi5_llm"  # the shipped LM target whose KLD ceiling the per-slice table reads


def _write_md(frame: pd.DataFrame, path: Path, task, workload, threads: int, elapsed_s: float,
              stem: str = "llm") -> None:
    rows = compare(frame[~frame.kind.str.startswith("calibration")])
    lines = [f"# llama.cpp presets against the search's mixes ({task.name})", "",
             f"Teacher: {task.teacher_note}. Quality on {task.eval_windows} windows of {task.window_tokens} tokens "
             f"of {task.evaluation_text} (second half of each scored), against the fp32 teacher; "
             f"importance matrices on {task.calibration_tokens} tokens of "
             f"{', '.join(p.calibration.describe() for p in task.parts())}. Speed: "
             f"prompt {workload.prompt_tokens}, {workload.gen_tokens} generated, context {workload.context_tokens}, "
             f"{threads} thread(s), this machine. {(frame.measured == 'this run').sum()} of {len(frame)} rows measured in "
             f"this run ({elapsed_s / 60:.0f} min), the others in an earlier run of this bench on the same cache "
             f"(column `measured` in llm.csv). Teacher grids: "
             f"{', '.join(TEACHER_GRIDS.get(task.name, ())) or 'none'} hold it exactly (presets using them marked, "
             f"not graded), {', '.join(NEAR_GRIDS.get(task.name, ())) or 'none'} come close (presets using them "
             f"marked and graded, and open to the search's mixes too, marked where used).", "",
             "| preset | MB | KLD | search's best at <= MB | MB | KLD | no higher | strictly lower (2 SE) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['preset_mb']:.1f} | {r['preset_kld']:.4f} | {r['search'] or '-'} | "
                     f"{r['search_mb'] or float('nan'):.1f} | {r['search_kld'] or float('nan'):.4f} | "
                     f"{'yes' if r['no_higher'] else 'NO'} | {'yes' if r['strictly_lower'] else 'no'} |"
                     + (f" {r['note']}" if r["note"] else ""))
    graded = [r for r in rows if "falsely lossless" not in r["note"]]  # on the teacher's own grid: not a fair test
    lines += ["", f"Presets off the teacher's grid: {len(graded)}; the search has a point no larger with no higher "
                  f"KLD for {sum(r['no_higher'] for r in graded)}, strictly lower for "
                  f"{sum(r['strictly_lower'] for r in graded)}.", "",
              f"Full table: {stem}.csv (bits per weight, peak RSS, perplexity, prefill and decode tokens/s)."]
    if task.slices:
        lines += _slices_md(frame, task)
    summary.write(path, "\n".join(lines) + "\n", threads)


def _write_plot(frame: pd.DataFrame, path: Path, task) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for kind, marker in (("preset", "square"), ("preset+imatrix", "diamond"), ("search", "circle"),
                         ("teacher", "star")):
        f = frame[frame.kind == kind]
        fig.add_trace(go.Scatter(x=f.file_mb, y=f.kld_mean.clip(lower=1e-6), mode="markers+text", name=kind,
                                 text=f.setting.str.split(" ").str[0] if kind != "search" else None,
                                 textposition="top center", marker={"symbol": marker, "size": 10},
                                 error_y={"type": "data", "array": f.kld_mean_se}, hovertext=f.setting))
    fig.update_layout(title=f"{task.name}: mean KLD to the fp32 teacher against GGUF size", xaxis_title="file MB",
                      yaxis_title="mean KLD (nats/token)", yaxis_type="log")
    tmp = path.with_name(f".{path.name}.tmp")
    fig.write_html(str(tmp), include_plotlyjs=True)
    tmp.replace(path)

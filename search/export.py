"""Export: the exact measured artifact, its tokenizer, and a deploy card (DEPLOY.md) with checksums."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from . import backends, confidence
from .errors import ConfigError
from .objectives import SLICE_SEP, constraints, for_budget, slice_limits
from .outputs import copy_model
from .run_dir import RunDir, read_json
from .tasks.teacher import file_sha256 as sha256

def export(run_dir: Path, out: Path, force: bool = False) -> Path:
    """Write the shipped files into `out`: a new or empty folder, or (force) an existing one in which exactly the
    files export writes are replaced, file by file (also inside `hf/`); the user's other files are never touched.
    The files are made in a temporary folder inside `out` first and every name is checked before one is moved, so
    a refusal or a failure leaves `out` as it was."""
    rd = RunDir(run_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(out, "--out", "exists and is not a folder; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(out, "--out", "folder is not empty; give a new or empty folder, or --force to replace "
                                        "only the files export writes there")
    selected_file = rd.selected_json
    if not selected_file.is_file():
        raise ConfigError(selected_file, "-", "no selection in this run; run `python -m search select RUN` first")
    selected = read_json(selected_file, ("trial", "meets_budget", "params", "metrics"))
    if not selected["meets_budget"]:
        raise ConfigError(selected_file, "meets_budget", "false: no candidate met every budget, nothing to ship; "
                                                         "widen the space or relax the target's budget")
    saved = rd.saved()
    trial = selected["trial"]
    source = rd.artifact(trial)
    if not source.is_file():
        raise ConfigError(source, "-", f"the artifact of trial {trial} is missing; was the run directory pruned?")
    created = not out.exists()
    work = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".export-", dir=out))  # inside `out`: one file system, nothing beside it
        tmp = work / "files"
        copy_model({"trial": trial, "params": selected["params"], "metrics": selected["metrics"]}, rd,
                   saved["classes"], tmp)
        hf = source.parent / "hf"
        if hf.is_dir():  # the fp32 student before quantization, for from_pretrained
            shutil.copytree(hf, tmp / "hf")
            for item in (rd.tokenizer_dir.iterdir() if rd.tokenizer_dir.is_dir() else ()):  # its files, any kind
                if item.is_file():
                    shutil.copy2(item, tmp / "hf" / item.name)
        (tmp / "DEPLOY.md").write_text(deploy_card(selected, saved, tmp))
        moves = [(f, out / f.relative_to(tmp)) for f in sorted(tmp.rglob("*")) if f.is_file()]
        for _, dst in moves:  # all checked before the first is moved
            _check_replaceable(out, dst)
        for src, dst in moves:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    except OSError as exc:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise ConfigError(out, "--out", f"cannot write there ({exc.strerror or exc}); pick another folder") from None
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    return out


def _check_replaceable(out: Path, dst: Path) -> None:
    """export writes file `dst` under `out`: refused where that would replace a folder of the user's with a file
    or a file with a folder, or write through a link out of `out`."""
    if dst.is_dir() and not dst.is_symlink():
        raise ConfigError(dst, "--out", "is a folder where export writes a file; move it, or give another --out")
    for parent in list(dst.relative_to(out).parents)[:-1]:  # the folders between `out` and the file
        p = out / parent
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            raise ConfigError(p, "--out", "is a file or a link where export writes a folder; move it, or give "
                                          "another --out")


def deploy_card(selected: dict, saved: dict, out: Path) -> str:
    m, t, b = selected["metrics"], selected["teacher"], selected["budget"]
    src = m["latency_source"]
    how = {"accuracy": "measured: this artifact on the validation split",
           "memory_mb": ("peak resident memory of a fresh process running it (measured)" if src == "measured" else
                         "weights measured (artifact bytes) + activations / KV cache and runtime estimated")}
    for o in constraints(b)[1:]:
        how.setdefault(o.name, src)
    quality = for_budget(b)[0]
    how[quality.name] = saved.get("quality_source", how["accuracy"])
    lines = [f"# Deploy card: trial {selected['trial']} for {selected['target']}", "",
             f"Selected by policy `{selected.get('policy', 'accuracy')}`; meets every budget: "
             f"{selected['meets_budget']}.", "", "| metric | selected | teacher (fp32) | budget | how obtained |",
             "|---|---|---|---|---|"]
    for o in constraints(b):
        digits = 3 if o.unit in ("ms", "MB") else 4
        limit = f"{'>=' if o.sign > 0 else '<='} {b[o.budget_key]:.{digits}f}" + (
            f" ({b[o.budget_key + '_rule']})" if o.budget_key + "_rule" in b else "")
        lines.append(f"| {o.name} | {m[o.name]:.{digits}f} | {t[o.name]:.{digits}f} | {limit} | {how[o.name]} |")
    for x in slice_limits(b):  # the quality objective on each slice the task names, against that slice's limit
        teacher_value = f"{t[x.key]:.4f}" if x.key in t else "-"
        lines.append(f"| {x.key} | {m[x.key]:.4f} | {teacher_value} | {'>=' if x.objective.sign > 0 else '<='} "
                     f"{x.limit:.4f} | {how[quality.name]}, on slice {x.slice} |")
    p50 = for_budget(b)[1].p50
    lines.append(f"| {p50} | {m[p50]:.3f} | {t[p50]:.3f} | | {src} |")
    lines += ["", "MB = 2^20 bytes (MiB) throughout, as in every `*_mb` figure of the run."]
    if saved.get("teacher_note"):
        lines += ["", f"Teacher: {saved['teacher_note']}."]
    if selected.get("bounds"):  # what "meets every budget" rests on
        level = b.get("confidence", confidence.DEFAULT_CONFIDENCE)
        lines += ["", f"## Confidence bounds ({level:.0%}, one-sided)", "",
                  "A candidate ships only when these bounds, not just the point estimates, are within the budget.", "",
                  "| metric | bound | within budget | method |", "|---|---|---|---|"]
        for name, bd in selected["bounds"].items():
            o = next(o for o in constraints(b) if o.name == name.split(SLICE_SEP)[0])
            value = "none" if bd["bound"] is None else f"{'>=' if o.sign > 0 else '<='} {bd['bound']:.4g}"
            lines.append(f"| {name} | {value} | {'yes' if bd['meets'] else 'NO'} | {bd['method']} |")
    lines += ["", "## Why this candidate", ""]
    lines += [f"- {w}" for w in selected["why"]]
    if selected.get("budget_cost"):
        lines += ["", "## What the budget buys", ""] + [f"- {c['text']}" for c in selected["budget_cost"].values()]
    lines += ["", "## Recipe", "", "| knob | value |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in sorted(selected["params"].items())]
    if m.get("types"):  # a language model: the GGML type of each tensor class, and what llama.cpp wrote
        lines += [f"| GGML type per tensor class | {m['types']} |", f"| tensors as written | {m['types_written']} |"]
    lines += ["", "## Files (sha256)", ""]
    lines += [f"- `{p.name}` {sha256(p)}" for p in sorted(out.iterdir()) if p.is_file() and p.name != "DEPLOY.md"]
    backend = backends.get(saved.get("backend", backends.DEFAULT))
    if (out / "hf").is_dir():
        lines += ["", "`hf/` holds the same student in fp32 *before* quantization, as a stock Hugging Face "
                      f"directory (`{saved.get('hf_auto_class', 'AutoModel')}.from_pretrained('hf')`, safetensors): "
                      "for further fine-tuning or another runtime. Pruned heads and neurons are stored as "
                      f"zeros there. What was measured and is meant to ship is `{backend.artifact_name}`."]
    lines += ["", backend.usage(saved), ""]
    return "\n".join(lines)

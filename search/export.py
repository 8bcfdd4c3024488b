"""Export: the exact measured artifact, its tokenizer, and a deploy card (DEPLOY.md) with checksums."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from . import backends
from .errors import ConfigError
from .outputs import copy_model
from .run_dir import RunDir
from .tasks.teacher import file_sha256 as sha256

def export(run_dir: Path, out: Path) -> Path:
    rd = RunDir(run_dir)
    selected_file = rd.selected_json
    if not selected_file.is_file():
        raise ConfigError(selected_file, "-", "no selection in this run; run `python -m search select RUN` first")
    selected = json.loads(selected_file.read_text())
    if not selected["meets_budget"]:
        raise ConfigError(selected_file, "meets_budget", "false: no candidate met every budget, nothing to ship; "
                                                         "widen the space or relax the target's budget")
    saved = rd.saved()
    trial = selected["trial"]
    source = rd.artifact(trial)
    if not source.is_file():
        raise ConfigError(source, "-", f"the artifact of trial {trial} is missing; was the run directory pruned?")
    shutil.rmtree(out, ignore_errors=True)
    copy_model({"trial": trial, "params": selected["params"], "metrics": selected["metrics"]}, rd,
               saved["classes"], out)
    hf = source.parent / "hf"
    if hf.is_dir():  # the fp32 student before quantization, for from_pretrained
        shutil.copytree(hf, out / "hf")
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (out / name).is_file():
                shutil.copy2(out / name, out / "hf" / name)
    (out / "DEPLOY.md").write_text(deploy_card(selected, saved, out))
    return out


def deploy_card(selected: dict, saved: dict, out: Path) -> str:
    m, t, b = selected["metrics"], selected["teacher"], selected["budget"]
    src = m["latency_source"]
    lines = [f"# Deploy card: trial {selected['trial']} for {selected['target']}", "",
             f"Selected by policy `{selected.get('policy', 'accuracy')}`; meets every budget: "
             f"{selected['meets_budget']}.", "", "| metric | selected | teacher (fp32) | budget | how obtained |",
             "|---|---|---|---|---|",
             f"| accuracy (validation) | {m['accuracy']:.4f} | {t['accuracy']:.4f} | >= {b['accuracy_floor']:.4f} "
             f"({b['accuracy_floor_rule']}) | measured: this artifact on the validation split |",
             f"| memory MB | {m['memory_mb']:.2f} | {t['memory_mb']:.2f} | <= {b['memory_mb']:g} | weights measured "
             "(artifact bytes) + activations estimated |",
             f"| p50 latency ms | {m['p50_latency_ms']:.3f} | {t['p50_latency_ms']:.3f} | | {src} |",
             f"| p99 latency ms | {m['p99_latency_ms']:.3f} | {t['p99_latency_ms']:.3f} | <= {b['p99_latency_ms']:g} "
             f"| {src} |", "", "## Why this candidate", ""]
    lines += [f"- {w}" for w in selected["why"]]
    lines += ["", "## Recipe", "", "| knob | value |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in sorted(selected["params"].items())]
    lines += ["", "## Files (sha256)", ""]
    lines += [f"- `{p.name}` {sha256(p)}" for p in sorted(out.iterdir()) if p.is_file() and p.name != "DEPLOY.md"]
    backend = backends.get(saved.get("backend", backends.DEFAULT))
    if (out / "hf").is_dir():
        lines += ["", "`hf/` holds the same student in fp32 *before* quantization, as a stock Hugging Face "
                      f"directory (`{saved.get('hf_auto_class', 'AutoModel')}.from_pretrained('hf')`, safetensors): "
                      "for further fine-tuning or another runtime. Pruned heads and neurons are stored as "
                      f"zeros there. What was measured and is meant to ship is `{backend.artifact_name}`."]
    lines += ["", backend.usage(saved["classes"], saved["max_length"]), ""]
    return "\n".join(lines)

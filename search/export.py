"""Export: the exact measured ONNX artifact, its tokenizer, and a deploy card (DEPLOY.md) with checksums."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .errors import ConfigError
from .outputs import artifact_path, copy_model
from .tasks.teacher import file_sha256 as sha256

USAGE = '''```python
import numpy as np, onnxruntime as ort
from transformers import AutoTokenizer

tok = AutoTokenizer.from_pretrained(".")
sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
enc = tok(["your text here"], truncation=True, max_length={max_length}, return_tensors="np")
logits = sess.run(["logits"], {{"input_ids": enc["input_ids"].astype(np.int64),
                               "attention_mask": enc["attention_mask"].astype(np.int64)}})[0]
print({classes!r}[int(logits.argmax(-1)[0])])
```'''


def export(run_dir: Path, out: Path) -> Path:
    selected_file = run_dir / "selected.json"
    if not selected_file.is_file():
        raise ConfigError(selected_file, "-", "no selection in this run; run `python -m search select RUN` first")
    selected = json.loads(selected_file.read_text())
    if not selected["meets_budget"]:
        raise ConfigError(selected_file, "meets_budget", "false: no candidate met every budget, nothing to ship; "
                                                         "widen the space or relax the target's budget")
    saved = json.loads((run_dir / "budget.json").read_text())
    trial = selected["trial"]
    source = artifact_path(run_dir, trial)
    if not source.is_file():
        raise ConfigError(source, "-", f"the artifact of trial {trial} is missing; was the run directory pruned?")
    copy_model({"trial": trial, "params": selected["params"], "metrics": selected["metrics"]}, run_dir,
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
    if (out / "hf").is_dir():
        lines += ["", "`hf/` holds the same student in fp32 *before* quantization, as a stock Hugging Face "
                      "directory (`AutoModelForSequenceClassification.from_pretrained('hf')`, safetensors): "
                      "for further fine-tuning or another runtime. Pruned heads and neurons are stored as "
                      "zeros there. What was measured and is meant to ship is `model.onnx`."]
    lines += ["", "## Run it with onnxruntime", "", USAGE.format(max_length=saved["max_length"],
                                                               classes=saved["classes"]), ""]
    return "\n".join(lines)

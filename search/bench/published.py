"""`python -m search bench published`: the spec-only decode estimate (search/measure/decode.py: bytes read per token
over memory bandwidth x efficiency) against tokens-per-second figures that others measured with llama.cpp (or
Ollama, which runs llama.cpp) on the shipped devices. No device is needed: each figure gives the GGUF's size and
the measured decode speed; the estimate takes the size as the bytes read per token (every weight once; the KV
cache of a short chat is small beside a 1-4 GB model) and the device's bandwidth and efficiency from its target
file. Writes results/bench/published.csv and published.md (error per figure, median |error| per device).

The figures, with where each was published (quoted in docs/benchmarks.md)."""
from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd

from ..target import load_target
from . import summary

# (target file, model, GGUF type, file MB, decode tokens/s, runtime, source)
FIGURES = (
    ("raspberry_pi5", "Llama 3.2 1B", "Q4_K_M", 770.3, 11.22, "Ollama, CPU",
     "github.com/stratosphereips/StratosphereLinuxIPS docs/immune/research_rpi_llm_performance.md"),
    ("raspberry_pi5", "Gemma 3 1B", "Q4_K_M", 777.5, 11.53, "Ollama, CPU", "same"),
    ("raspberry_pi5", "Qwen2.5 1.5B", "Q4_K_M", 940.4, 9.97, "Ollama, CPU", "same"),
    ("raspberry_pi5", "SmolLM2 1.7B", "Q4_K_M", 1006.7, 8.23, "Ollama, CPU", "same"),
    ("raspberry_pi5", "Qwen2.5 3B", "Q4_K_M", 1840.5, 5.2, "Ollama, CPU", "same"),
    ("raspberry_pi5", "Llama 3.2 3B", "Q4_K_M", 1925.8, 4.69, "Ollama, CPU", "same"),
    ("raspberry_pi5", "TinyLlama 1.1B", "Q8_0", 1.09 * 1024, 9.0, "llama.cpp 2024-03-26, CPU",
     "justine.lol/matmul ('LLaMA Now Goes Faster on CPUs'); size: github.com/mozilla-ai/llamafile/pull/453"),
    ("jetson_orin", "Nemotron3 Nano 4B", "Q4_K_M", 2500.0, 18.0, "llama.cpp, CUDA, concurrency 1",
     "github.com/NVIDIA-AI-IOT/jetson-ai-lab src/data/benchmarks.json (jetson-ai-lab.com)"),
    ("jetson_agx_orin", "Nemotron3 Nano 4B", "Q4_K_M", 2500.0, 43.0, "llama.cpp, CUDA, concurrency 1", "same"),
)
COLUMNS = ("device", "model", "type", "file_mb", "published_tok_s", "estimated_tok_s", "error", "runtime", "source")


def run(out_dir: Path, log=print) -> pd.DataFrame:
    rows = []
    for target_name, model, gtype, file_mb, tok_s, runtime, source in FIGURES:
        dev = load_target(target_name, calibrated=False).device
        bandwidth = dev.memory_bandwidth_gbps * 1e9 * dev.bandwidth_efficiency
        estimated = bandwidth / (file_mb * 2**20)
        rows.append({"device": target_name, "model": model, "type": gtype, "file_mb": file_mb,
                     "published_tok_s": tok_s, "estimated_tok_s": estimated, "error": estimated / tok_s - 1,
                     "runtime": runtime, "source": source})
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_dir / "published.csv", index=False)
    lines = ["# Spec-only decode estimate against published llama.cpp figures", "",
             "estimate = bandwidth x bandwidth_efficiency (the target file's, uncalibrated) / GGUF bytes; error = "
             "estimated / published - 1", "", "| device | model | type | MB | published tok/s | estimated | error |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['device']} | {r['model']} | {r['type']} | {r['file_mb']:.0f} | {r['published_tok_s']:g} | "
                     f"{r['estimated_tok_s']:.1f} | {r['error']:+.0%} |")
    lines.append("")
    for device in dict.fromkeys(r["device"] for r in rows):
        errs = [abs(r["error"]) for r in rows if r["device"] == device]
        lines.append(f"- {device}: median |error| {statistics.median(errs):.0%} over {len(errs)} figure(s)")
    summary.write(out_dir / "published.md", "\n".join(lines) + "\n", threads=None)  # arithmetic on spec sheets
    log("\n".join(lines))
    return frame

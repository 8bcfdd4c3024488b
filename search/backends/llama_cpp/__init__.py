"""Runtime backend `llama.cpp`: the artifact is a GGUF file, run by llama.cpp (llama-cpp-python, pinned in
requirements.lock and built from source by the set-up).

- `build` writes the trained torch model as an F32 GGUF (gguf_file.py) and quantizes it with llama.cpp's own
  quantizer to the recipe's types per tensor class, optionally with an importance matrix (quantize.py).
- `quality` runs the GGUF in llama.cpp over the task's held-out windows and scores its outputs against the
  teacher's (tasks/causal_lm.py): what is measured is what ships.
- `measure_speed` runs probe.py in a fresh process, here or on a runner's device: time to first token, time per
  output token, peak resident memory with the KV cache allocated at the workload's context length.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from ...errors import CandidateError
from ...target import LMWorkload  # the workload the probe runs; defined with the target
from ..base import Backend
from . import gguf_file, quantize
from .quantize import Mix

PROBE = Path(__file__).with_name("probe.py")
F32_NAME = "model-f32.gguf"
ARTIFACT_NAME = "model.gguf"


class LlamaCpp(Backend):
    """The backend object a run holds (backends.get("llama.cpp")). Building and scoring a GGUF are this module's
    functions (build, quality, measure_speed), which the causal-LM flow calls: a GGUF is quantized from an F32 GGUF
    with a Mix of GGML types, not from a torch model with QuantParams (backends/base.py: ModelBackend)."""

    name = "llama.cpp"
    artifact_name = ARTIFACT_NAME

    def weight_bytes(self, artifact: Path) -> int:
        return quantize.weight_bytes(artifact)

    def remeasure(self, artifact: Path, saved: dict, runner, confidence: float) -> tuple[dict, bool, str]:
        from ...confidence import measured_latency_bound

        s = measure_speed(artifact, LMWorkload(**saved["workload"]), saved["threads"], runner=runner, rounds=10)
        upper, how = measured_latency_bound(s["tpot_steps_ms"], confidence)
        return ({k: s[k] for k in ("ttft_ms", "tpot_p50_ms", "tpot_p99_ms", "latency_spread")}
                | {"memory_mb": s["peak_rss_mb"], "tpot_p99_ms_upper": upper, "latency_bound_method": how},
                s["latency_noisy"], s["speed_detail"])

    def usage(self, saved: dict) -> str:
        wl = saved.get("workload", {})
        ctx, n = wl.get("context_tokens", 2048), wl.get("gen_tokens", 64)
        threads = saved.get("threads")  # the target's (measured: what it was measured with); none stated: N
        note = ([] if threads else ["Set N to the device's core count (the target file gives no `threads`)."])
        threads = threads or "N"
        return "\n".join([
            "Run it with llama.cpp (the file is a standard GGUF; llama.cpp's CLI or server, or llama-cpp-python):",
            *note,
            "```", f"llama-cli -m {ARTIFACT_NAME} -c {ctx} -n {n} -t {threads} -p \"Your prompt\"",
            f"llama-server -m {ARTIFACT_NAME} -c {ctx} -t {threads} --port 8080", "```", "```python",
            "from llama_cpp import Llama",
            f"llm = Llama(model_path=\"{ARTIFACT_NAME}\", n_ctx={ctx}, n_threads={threads})",
            f"print(llm(\"Your prompt\", max_tokens={n})[\"choices\"][0][\"text\"])", "```",
            "transformers reads it too: `AutoModelForCausalLM.from_pretrained('.', gguf_file='model.gguf')` "
            "(dequantized to float)."])


def write_f32(model, workdir: Path, template: Path) -> Path:
    from ...families import of

    standard = of(model).to_standard(model)  # every layer at one head/FFN count (cut ones zero)
    return gguf_file.write_f32(standard, workdir / F32_NAME, template)


def build(f32: Path, mix: Mix, out: Path, imatrix: dict | None = None, threads: int = 2) -> Path:
    return quantize.quantize(f32, out, mix, imatrix, threads)


def quality(path: Path, w, reference_path: Path, threads: int, window_slices=None, rows=None) -> dict:
    """Score the GGUF's next-token distributions on held-out windows `w` (causal_lm.Windows) against the
    teacher's log-probabilities in `reference_path` (flows/causal_lm/task.py: write_reference); with
    `window_slices` (the slice of each window), on each slice too; `rows`: only these windows (default all)."""
    import llama_cpp

    from ...tasks import causal_lm

    quantize.quiet_logs()
    try:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=w.length, n_batch=w.length, n_ubatch=w.length,
                              logits_all=True, n_threads=threads, n_threads_batch=threads, verbose=False)
    except Exception as exc:  # llama-cpp-python raises ValueError for a model it cannot load
        raise CandidateError(f"llama.cpp cannot load {path.name}: {exc}") from None
    try:
        parts = []
        for i in range(len(w.ids)) if rows is None else rows:
            row = w.ids[i]
            llm.reset()
            llm.eval(row.tolist())
            outputs = np.asarray(llm.scores[w.first_scored:w.length - 1])
            teacher = causal_lm.teacher_logp(reference_path, i)
            parts.append(causal_lm.score_window(teacher, outputs, row[w.first_scored + 1:]))
    finally:
        llm.close()
    scores = causal_lm.TokenScores.concat(parts)  # its windows numbered as scored: the slices of those rows
    names = None if window_slices is None else np.asarray(window_slices)[list(rows) if rows is not None else slice(None)]
    by_slice = {} if names is None else causal_lm.summarize_slices(scores, names)
    return {**causal_lm.summarize(scores), **by_slice}


def measure_speed(path: Path, workload: LMWorkload, threads: int, runner=None, rounds: int = 3) -> dict:
    """Median time to first token over rounds; p50/p99 time per output token over every generated token."""
    from ...measure.latency import run_probe
    from ...tasks.teacher import file_sha256

    r, where = run_probe(PROBE, path, ["--prompt-tokens", str(workload.prompt_tokens), "--gen-tokens",
                                       str(workload.gen_tokens), "--context", str(workload.context_tokens),
                                       "--threads", str(threads), "--rounds", str(rounds)], runner)
    if r["model_sha256"] != file_sha256(path):
        raise CandidateError(f"the probe on {where} measured another file than {path.name} (checksum differs)")
    steps = np.concatenate([np.asarray(s) for s in r["tpot_ms"]])
    ttft = statistics.median(r["ttft_ms"])
    return {"ttft_ms": ttft, "tpot_p50_ms": float(np.percentile(steps, 50)),
            "tpot_p99_ms": float(np.percentile(steps, 99)),
            "prefill_tok_s": workload.prompt_tokens / (ttft / 1000),
            "decode_tok_s": 1000 / float(np.median(steps)), "peak_rss_mb": r["peak_rss_mb"],
            "latency_spread": r["spread"], "latency_noisy": r["noisy"], "tpot_steps_ms": steps.tolist(),
            "speed_detail": f"{r['runtime']} CPU on {where}, fresh process, {r['threads']} thread(s), {r['rounds']} "
                            f"rounds after {r['warmup']} warm-up, attempt {r['attempts']}, context {r['n_ctx']}; "
                            f"peak memory over the {r['baseline_rss_mb']:.0f} MB of the process before loading"}


def tokenize(gguf: Path, texts: list[str]) -> tuple[list[list[int]], int | None]:
    """Token ids of running texts (no special tokens) by the GGUF's own tokenizer, read without its weights
    (vocab-only: a fraction of a second, where transformers' GGUF tokenizer takes seconds), and its BOS id."""
    import llama_cpp

    quantize.quiet_logs()
    llm = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    try:
        ids = [llm.tokenize(t.encode("utf-8"), add_bos=False, special=False) for t in texts]
        bos = llm.token_bos()
    finally:
        llm.close()
    return ids, (bos if bos >= 0 else None)


def file_mb(path: Path) -> float:
    return path.stat().st_size / 2**20

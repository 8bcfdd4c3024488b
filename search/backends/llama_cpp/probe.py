"""Standalone llama.cpp speed probe, run in a fresh process (here or on a runner's device): it imports only
llama_cpp and the standard library, loads one GGUF, and times what a chat user waits for.

Per round: an emptied KV cache; prefill `prompt_tokens` (time to first token), then `gen_tokens` single-token
decode steps, each timed (time per output token), greedy so the run is deterministic. The same noise handling
as the onnxruntime probe: rounds after a warm-up, and an attempt whose per-round medians spread more than
MAX_SPREAD is measured again (the steadiest attempt is kept, flagged noisy if still above). Peak memory is the
process's resident high-water mark minus its resident size before the model was loaded (interpreter and
llama.cpp library): the weights, the KV cache allocated at `--context`, and the compute buffers.

usage: python probe.py MODEL --prompt-tokens N --gen-tokens M --context C [--threads T --rounds R]
Prints one JSON object."""
from __future__ import annotations

import argparse
import hashlib
import json
import time


def _status_mb(key: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident) of this process. Not getrusage's ru_maxrss: that survives
    exec, so a child of a large process would report its parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


MAX_SPREAD = 0.15  # per-round median decode steps further apart than this (relative): the host was busy
ATTEMPTS = 3


def rounds_of(llm, prompt: list, gen_tokens: int, rounds: int) -> tuple[list, list]:
    import numpy as np  # llama_cpp's own dependency

    vocab = llm.n_vocab()
    ttft, tpot = [], []
    for _ in range(rounds):
        llm.reset()  # n_tokens = 0: the next eval drops the whole KV cache
        t0 = time.perf_counter()
        llm.eval(prompt)
        ttft.append((time.perf_counter() - t0) * 1000)
        steps = []
        for _ in range(gen_tokens):
            nxt = int(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,)).argmax())  # greedy
            t0 = time.perf_counter()
            llm.eval([nxt])
            steps.append((time.perf_counter() - t0) * 1000)
        tpot.append(steps)
    return ttft, tpot


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt-tokens", type=int, required=True)
    ap.add_argument("--gen-tokens", type=int, required=True)
    ap.add_argument("--context", type=int, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    import statistics

    import llama_cpp

    baseline = _status_mb("VmRSS")  # interpreter + llama.cpp loaded, no model yet
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=a.context, n_batch=min(a.context, 512), n_threads=a.threads,
                          n_threads_batch=a.threads, logits_all=False, verbose=False)
    # a fixed, model-independent prompt: token ids spread over the vocabulary (cost does not depend on them)
    prompt = [1 + (i * 7919) % (llm.n_vocab() - 1) for i in range(a.prompt_tokens)]
    rounds_of(llm, prompt, a.gen_tokens, a.warmup)
    best = None
    for attempt in range(ATTEMPTS):  # a noisy attempt is measured again; the steadiest one is kept
        ttft, tpot = rounds_of(llm, prompt, a.gen_tokens, a.rounds)
        medians = [statistics.median(r) for r in tpot]
        spread = (max(medians) - min(medians)) / statistics.median([t for r in tpot for t in r])
        if best is None or spread < best["spread"]:
            best = {"ttft_ms": ttft, "tpot_ms": tpot, "spread": spread, "attempts": attempt + 1}
        if spread <= MAX_SPREAD:
            break
    llm.close()
    best.update(noisy=best["spread"] > MAX_SPREAD, max_spread=MAX_SPREAD,
                peak_rss_mb=_status_mb("VmHWM") - baseline, baseline_rss_mb=baseline,
                model_sha256=_sha256(a.model), threads=a.threads, n_ctx=a.context, rounds=a.rounds,
                warmup=a.warmup, runtime=f"llama.cpp (llama-cpp-python {llama_cpp.__version__})")
    print(json.dumps(best))


if __name__ == "__main__":
    main()

"""The language-model run's own pieces, without the real teacher: LM targets are read strictly, the screen prices a
planned shape exactly as llama.cpp stores the quantized GGUF, the solver's types follow the bits-per-weight budget,
selection honours the per-token latency and the time-to-first-token budget, and the spec-only estimate is the
stated formula."""
from __future__ import annotations

import dataclasses
import math

import pytest

from search import families, pareto
from search.backends.llama_cpp import gguf_file, mixes, quantize
from search.flows.causal_lm.recipe import LMRecipe
from search.errors import ConfigError
from search.measure import decode
from search import flows
from search.outputs import budget_line, summary_table
from search.flows.causal_lm.pipeline import planned_shape, resolve
from search.target import load_target
from test_llama_cpp import template, tiny_llama  # noqa: F401  (fixture)

FAM = families.get("llama_lm")

LM_TARGET = """
name: t
device: {latency: measured, runtime: llama.cpp, memory_mb: 8000, threads: 1}
workload: {prompt_tokens: 16, gen_tokens: 8, context_tokens: 64}
budget: {memory_mb: 100, tpot_p99_ms: 20, ttft_ms: 300, kld_ceiling: 0.1}
"""


def write(tmp_path, text, name="t.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_an_lm_target_reads_its_workload_and_budget(tmp_path):
    t = load_target(str(write(tmp_path, LM_TARGET)))
    assert (t.workload.prompt_tokens, t.workload.gen_tokens, t.workload.context_tokens) == (16, 8, 64)
    assert (t.budget.tpot_p99_ms, t.budget.ttft_ms, t.budget.quality_limit.key) == (20, 300, "kld_ceiling")
    b = flows.get("causal_lm").resolved_budget(t, {})
    assert b == {"memory_mb": 100, "tpot_p99_ms": 20, "latency": "tpot_p99_ms", "quality": "kld_mean",
                 "kld_ceiling": 0.1, "kld_ceiling_rule": "absolute", "ttft_ms": 300, "confidence": 0.95,
                 "flow": "causal_lm"}
    assert budget_line(b) == "kld_mean <= 0.1 nats/token, tpot_p99_ms <= 20 ms, memory_mb <= 100 MB, ttft_ms <= 300 ms"


@pytest.mark.parametrize("edit, key", [
    (("kld_ceiling: 0.1", "kld_ceiling: 0.1, top1_agreement_floor: 0.9"), "budget.-"),
    (("kld_ceiling: 0.1", "p99_latency_ms: 5"), "budget.-"),
    (("context_tokens: 64", "context_tokens: 20"), "workload.context_tokens"),
    (("ttft_ms: 300", "ttft_ms: 300, p99_latency_ms: 5"), "budget: unknown"),
    (("prompt_tokens: 16", "batch_size: 1"), "workload"),
    (("kld_ceiling: 0.1", "perplexity_ratio_ceiling: 0.5"), "budget.perplexity_ratio_ceiling"),
])
def test_bad_lm_targets_are_one_line_errors(tmp_path, edit, key):
    with pytest.raises(ConfigError) as err:
        load_target(str(write(tmp_path, LM_TARGET.replace(*edit))))
    assert "\n" not in str(err.value) and str(err.value).split(": ")[1].startswith(key.split(":")[0])


def test_selection_honours_time_per_token_and_time_to_first_token():
    budget = {"memory_mb": 100, "tpot_p99_ms": 20, "latency": "tpot_p99_ms", "quality": "kld_mean",
              "kld_ceiling": 0.1, "ttft_ms": 300}
    row = lambda n, kld, tpot, mem, ttft: {"trial": n, "params": {}, "metrics": {  # noqa: E731
        "kld_mean": kld, "tpot_p99_ms": tpot, "memory_mb": mem, "ttft_ms": ttft}}
    rows = [row(0, 0.01, 10, 90, 400),  # best quality, but its first token comes too late
            row(1, 0.05, 19, 95, 250), row(2, 0.08, 5, 50, 100), row(3, 0.02, 25, 60, 100)]
    assert pareto.violations(rows[0]["metrics"], budget)["ttft_ms"] == 100
    choice = pareto.select(rows, budget)
    assert choice["selected"]["trial"] == 1 and choice["meets_budget"]
    assert "ttft_ms 250.00 vs budget 300 ms" in choice["why"][1] and "kld_mean 0.0500" in choice["why"][1]
    assert pareto.select(rows, budget, "latency")["selected"]["trial"] == 2
    # the table printed at the end names every budgeted metric
    sel = {"teacher": rows[0]["metrics"] | {"tpot_p50_ms": 8, "latency_source": "measured"},
           "metrics": rows[1]["metrics"] | {"tpot_p50_ms": 15}, "trial": 1, "why": choice["why"]}
    table = summary_table(sel, budget)
    assert "ttft_ms" in table and "OVER" in table.splitlines()[4] and "tpot_p50_ms" in table


def test_the_screen_prices_the_quantized_gguf_exactly(tmp_path, template):  # noqa: F811
    model = tiny_llama(hidden=256)  # FFN 128: the Q6_K asked for FFN down falls back to Q8_0, priced so
    shape = FAM.shape_of(model)
    f32 = gguf_file.write_f32(model, tmp_path / "f32.gguf", template)
    types = {"embedding": "Q8_0", "attn_qk": "Q4_0", "attn_v": "Q5_0", "attn_output": "IQ4_NL",
             "ffn_up_gate": "Q4_0", "ffn_down": "Q6_K"}
    path = quantize.quantize(f32, tmp_path / "q.gguf", quantize.Mix("Q8_0", types, False))
    classes, other = mixes.planned_class_shapes(FAM.tensors(shape))
    assert mixes.mix_bytes(classes, types) + other == quantize.weight_bytes(path)


def test_the_solver_spends_its_bits_where_they_pay():
    teacher = dataclasses.replace(FAM.shape_of(tiny_llama(hidden=256)), layers=4, heads=(4,) * 4, kv_heads=(2,) * 4,
                                  ffn=(512,) * 4)
    classes, _ = mixes.planned_class_shapes(FAM.tensors(teacher))
    # ffn_down hurts most when cut; the embedding not at all
    increase = {(c.name, t): {"Q5_0": 0.01, "IQ4_XS": 0.03}[t] * (5 if c.name == "ffn_down" else
                                                                 0 if c.name == "embedding" else 1)
                for c in classes for t in ("Q5_0", "IQ4_XS")}
    options = {c.name: ["Q8_0", "Q5_0", "IQ4_XS"] for c in classes}
    ctx = type("Ctx", (), {"teacher_shape": teacher, "family": FAM,
                           "sensitivity": mixes.Sensitivity(0.001, increase, options)})()
    previous = None
    for bpw in (4.5, 5.0, 5.5, 6.5, 8.5):
        r = resolve(ctx, LMRecipe(bits_per_weight=bpw))
        types = dict(r.types)
        elements = sum(rr * k for c in classes for rr, k in c.matrices)
        assert mixes.mix_bytes(classes, types, resident=True) <= bpw * elements / 8 or bpw == 4.5
        kld = 0.001 + sum(increase.get((c, t), 0.0) for c, t in types.items())
        assert previous is None or kld <= previous  # more bits never predict worse
        previous = kld
    assert dict(resolve(ctx, LMRecipe(bits_per_weight=4.5)).types)["embedding"] == "IQ4_XS"  # free to cut
    # with room for everything: the costly classes at Q8_0, the free one still at its smallest (no KLD to gain)
    assert dict(resolve(ctx, LMRecipe(bits_per_weight=8.5)).types) == {
        c.name: "IQ4_XS" if c.name == "embedding" else "Q8_0" for c in classes}
    # a type llama.cpp repacks on the CPU is resident twice (its mapped file pages and the copy)
    emb = next(c for c in classes if c.name == "embedding")
    assert emb.resident_bytes("Q4_0") == 2 * emb.bytes("Q4_0") and emb.resident_bytes("Q5_0") == emb.bytes("Q5_0")
    q4 = {**options, "embedding": ["Q8_0", "Q4_0"]}
    ctx.sensitivity = mixes.Sensitivity(0.001, {**increase, ("embedding", "Q4_0"): 0.0}, q4)
    assert dict(resolve(ctx, LMRecipe(bits_per_weight=4.5)).types)["embedding"] == "Q8_0"  # Q4_0 costs more resident
    cut = planned_shape(teacher, LMRecipe(drop_layers=1, ffn=256, kv_groups=1))
    assert (cut.layers, cut.ffn, cut.kv_heads, cut.heads) == (3, (256,) * 3, (1,) * 3, (2,) * 3)


def test_the_spec_estimate_is_bytes_over_bandwidth():
    shape = FAM.shape_of(tiny_llama(hidden=256))
    t = load_target("raspberry_pi5_llm")
    wl = t.workload
    est = decode.estimate(shape, 100 * 2**20, 90 * 2**20, {"Q4_0"}, t.device, wl)
    kv = decode.kv_bytes(shape, wl.prompt_tokens + wl.gen_tokens // 2)
    bw = t.device.memory_bandwidth_gbps * 1e9 * t.device.bandwidth_efficiency
    assert est.tpot_p50_ms == pytest.approx((90 * 2**20 + kv) / bw * 1e3)
    assert est.tpot_p99_ms == pytest.approx(est.tpot_p50_ms * t.device.tail_factor)
    assert est.memory_mb == pytest.approx(100 + decode.kv_bytes(shape, wl.context_tokens) / 2**20
                                          + decode.RUNTIME_OVERHEAD_MB)
    assert est.ttft_ms >= 90 * 2**20 / bw * 1e3 and math.isfinite(est.ttft_ms)


def test_published_figures_are_compared_with_the_estimate(tmp_path):
    from search.bench import published

    frame = published.run(tmp_path, log=lambda s: None)
    assert len(frame) == len(published.FIGURES) and {"raspberry_pi5", "jetson_orin"} <= set(frame.device)
    r = frame.iloc[0]
    dev = load_target(r.device, calibrated=False).device
    assert r.estimated_tok_s == pytest.approx(dev.memory_bandwidth_gbps * 1e9 * dev.bandwidth_efficiency
                                              / (r.file_mb * 2**20))
    assert r.error == pytest.approx(r.estimated_tok_s / r.published_tok_s - 1)
    assert "median |error|" in (tmp_path / "published.md").read_text()


TINY_LM_SPACE = """
cut: {drop_layers: {low: 0, high: 1}, ffn: {low: 64, high: 128, step: 64}, kv_groups: 2}
recovery: {steps: {low: 0, high: 2, step: 2}}
gguf: {bits_per_weight: {low: 4.5, high: 8.5, step: 4.0}}
"""
TINY_LM_TARGET = """
name: tiny_llm
device: {latency: measured, runtime: llama.cpp, memory_mb: 24000, threads: 1}
workload: {prompt_tokens: 16, gen_tokens: 32, context_tokens: 128}  # per-round medians over 32 steps: sub-ms steps are noisy
budget: {memory_mb: 4000, tpot_p99_ms: 1000, kld_ceiling: 5.0}
"""


@pytest.mark.slow  # a whole search in llama.cpp (~95 s): .ci/run runs it with the slow checks, keeping make test < 10 min
def test_an_lm_task_file_runs_the_whole_search_and_exports_a_gguf(tmp_path, template):  # noqa: F811
    """A tiny llama teacher given as a GGUF in a task file, through `run` (cut, recover, solver, quantize,
    measure in llama.cpp), `select` and `export`: the path a user's own model takes."""
    import json

    import pandas as pd

    from conftest import run_search

    words = "the quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun".split()
    rng = __import__("numpy").random.default_rng(0)
    for name, n in (("calib.txt", 3000), ("heldout.txt", 1500)):
        (tmp_path / name).write_text(" ".join(rng.choice(words, n)))
    gguf_file.write_f32(tiny_llama(), tmp_path / "teacher.gguf", template)
    (tmp_path / "task.yaml").write_text(
        "task_type: causal_lm\nteacher: teacher.gguf\n"
        "data: {calibration: calib.txt, evaluation: heldout.txt, window_tokens: 64, eval_windows: 2, "
        "calibration_tokens: 1024}\n")
    write(tmp_path, TINY_LM_SPACE, "space.yaml")
    write(tmp_path, TINY_LM_TARGET, "target.yaml")
    results = tmp_path / "results"
    proc = run_search(results, "run", "--target", str(tmp_path / "target.yaml"), "--task", str(tmp_path / "task.yaml"),
                      "--space", str(tmp_path / "space.yaml"), "--trials", "3", "--run-id", "lm")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "applying manual override" not in proc.stderr
    trials = pd.read_csv(results / "lm" / "trials.csv")
    done = trials[trials.state == "COMPLETE"]
    assert len(done) == 3 and (done.latency_source == "measured").all() and (done.kld_mean >= 0).all()
    assert trials.label.iloc[0].startswith("full")  # warm start: the uncut teacher quantized, before any cut
    assert done.types.str.contains("ffn_down=").all()  # the solver typed every class
    cache = next((results / "cache" / "lm").iterdir())  # the uncut teacher's weights: one file, not two copies
    assert (cache / "students" / "teacher" / "hf" / "model.safetensors").samefile(
        cache / "teacher" / "model.safetensors")
    selected = json.loads((results / "lm" / "selected.json").read_text())
    assert selected["meets_budget"] and selected["budget"]["quality"] == "kld_mean"
    out = tmp_path / "ship"
    proc = run_search(results, "export", "lm", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "model.gguf").is_file() and (out / "hf" / "config.json").is_file()
    assert "llama-cli -m model.gguf" in (out / "DEPLOY.md").read_text()
    # a language-model task on an onnxruntime target is refused in one line, before any work
    proc = run_search(results, "run", "--target", "jetson_orin", "--task", str(tmp_path / "task.yaml"))
    assert proc.returncode == 2 and "device.runtime" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_ffn_cuts_must_be_whole_blocks(tmp_path):
    from search.flows.causal_lm.space import check_against_teacher, load_lm_space

    shape = FAM.shape_of(tiny_llama(hidden=256))
    space = load_lm_space(str(write(tmp_path, TINY_LM_SPACE.replace("ffn: {low: 64, high: 128, step: 64}",
                                                                     "ffn: {low: 100, high: 128, step: 28}"),
                                    "space.yaml")))
    with pytest.raises(ConfigError, match="cut.ffn: 100 is not a multiple of 32"):
        check_against_teacher(space, FAM.limits(shape), shape)


def test_an_impossible_lm_budget_is_refused_before_any_measurement(tmp_path, template):  # noqa: F811
    """Refused from shapes alone: no teacher GGUF, importance matrix or sensitivity sweep is paid for first."""
    from conftest import run_search

    words = "a b c d e f g h".split()
    rng = __import__("numpy").random.default_rng(0)
    for name, n in (("calib.txt", 3000), ("heldout.txt", 1500)):
        (tmp_path / name).write_text(" ".join(rng.choice(words, n)))
    gguf_file.write_f32(tiny_llama(), tmp_path / "teacher.gguf", template)
    (tmp_path / "task.yaml").write_text(
        "task_type: causal_lm\nteacher: teacher.gguf\n"
        "data: {calibration: calib.txt, evaluation: heldout.txt, window_tokens: 64, eval_windows: 2, "
        "calibration_tokens: 1024}\n")
    write(tmp_path, TINY_LM_SPACE, "space.yaml")
    write(tmp_path, TINY_LM_TARGET.replace("memory_mb: 4000", "memory_mb: 2"), "target.yaml")
    results = tmp_path / "results"
    proc = run_search(results, "run", "--target", str(tmp_path / "target.yaml"), "--task", str(tmp_path / "task.yaml"),
                      "--space", str(tmp_path / "space.yaml"), "--trials", "2", "--run-id", "lm")
    assert proc.returncode == 2 and "budget.memory_mb: 2 MB, but the smallest recipe" in proc.stderr, proc.stderr
    assert not list(results.glob("cache/lm/*/sensitivity.json")) and not list(results.glob("cache/lm/*/students"))
    assert not (results / "lm").exists()  # a refused run leaves no run folder (issue 36)

"""The llama.cpp backend: a torch Llama written as GGUF computes in llama.cpp what it computes in torch; llama.cpp's
own quantizer applies the recipe's types per tensor class (and says when it had to fall back); quality is scored
against the teacher's reference; the speed probe runs the file it was given in a fresh process; transformers'
GGUF loader reads our quantized file back and gives the same quality within its standard error.

Tiny random models with SmolLM2's vocabulary (the tokenizer keys come from its GGUF, installed by the set-up);
no network."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import perturb_vectors
from search import families
from search.backends import llama_cpp as lc
from search.backends.llama_cpp import gguf_file, quantize
from search.compress import imatrix
from search.errors import CandidateError
from search.flows.causal_lm import task as lm
from search.tasks import causal_lm

FAM = families.get("llama_lm")
VOCAB = 49152  # the template's (SmolLM2's) vocabulary


def tiny_llama(seed=0, tied=True, hidden=64) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, tie_word_embeddings=tied,
                         attn_implementation="eager", use_cache=False, max_position_embeddings=256,
                         rope_theta=10000.0, bos_token_id=1)
    model = perturb_vectors(LlamaForCausalLM(config).eval(), 0.1)
    with torch.no_grad():  # logits of a trained model's scale, so quantization error shows in the KLD
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(3.0)
    return model


@pytest.fixture(scope="module")
def template():
    return lm.default_lm_task().teacher_gguf


def windows(count=2, length=64, seed=0) -> causal_lm.Windows:
    ids = np.random.default_rng(seed).integers(3, 2000, count * length)
    return causal_lm.windows(ids, length, count, bos_id=1)


def llama_cpp_logits(path, ids) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=len(ids), n_batch=len(ids), n_ubatch=len(ids),
                          logits_all=True, n_threads=2, verbose=False)
    try:
        llm.eval(list(map(int, ids)))
        return np.asarray(llm.scores[: len(ids)]).copy()
    finally:
        llm.close()


@pytest.mark.parametrize("tied", [True, False])
def test_f32_gguf_computes_what_torch_computes(tmp_path, template, tied):
    model = tiny_llama(tied=tied)
    path = lc.write_f32(model, tmp_path, template)
    names = set(quantize.tensor_types(path))
    assert ("output.weight" in names) is not tied  # a tied head reads token_embd
    ids = windows().ids[0]
    want = lm.reference_outputs(FAM, model, ids).numpy()
    got = llama_cpp_logits(path, ids)
    assert np.abs(got - want).max() < 2e-3 * np.abs(want).max()


def test_cut_student_is_written_as_a_standard_model(tmp_path, template):
    """Cut heads and FFN channels: written via to_standard (zeros where units were cut), same outputs."""
    model = tiny_llama()
    FAM.slice_heads(FAM.blocks(model)[0], [0])  # keep one KV group of layer 0
    FAM.slice_ffn(FAM.blocks(model)[1], torch.arange(0, 128, 2))
    path = lc.write_f32(model, tmp_path, template)
    ids = windows().ids[0]
    want = lm.reference_outputs(FAM, model, ids).numpy()
    assert np.abs(llama_cpp_logits(path, ids) - want).max() < 2e-3 * np.abs(want).max()


def test_mix_types_land_per_class_and_fallbacks_are_reported(tmp_path, template):
    model = tiny_llama(hidden=256)  # rows of 256: k-quants fit the attention and FFN up/gate inputs
    f32 = lc.write_f32(model, tmp_path, template)
    calib = np.random.default_rng(1).integers(3, 2000, 256)
    im = imatrix.collect(model, FAM, gguf_file.linears_of(model), calib, window=128)
    assert set(im) >= {"blk.0.attn_q.weight", "blk.1.ffn_down.weight", "token_embd.weight"}
    assert all(v.shape == (256,) or k.endswith("ffn_down.weight") for k, v in im.items())
    mix = quantize.Mix("Q8_0", {"attn_qk": "Q4_K", "ffn_up_gate": "Q5_0", "ffn_down": "Q4_K"}, imatrix=True)
    out = lc.build(f32, mix, tmp_path / "mix.gguf", im)
    types = quantize.tensor_types(out)
    assert types["blk.0.attn_q.weight"] == "Q4_K" and types["blk.1.attn_k.weight"] == "Q4_K"
    assert types["blk.0.ffn_up.weight"] == "Q5_0" and types["blk.1.ffn_gate.weight"] == "Q5_0"
    assert types["blk.0.ffn_down.weight"] != "Q4_K"  # 128-wide rows cannot hold 256-blocks: llama.cpp falls back
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert quantize.bits_per_weight(out) < quantize.bits_per_weight(f32) / 3


def test_quality_against_the_reference(tmp_path, template):
    model = tiny_llama()
    w = windows()
    ref = tmp_path / "ref.safetensors"
    own = lm.write_reference(FAM, model, w, ref)
    assert own["kld_mean"] < 1e-7 and own["top1_agreement"] == 1.0
    f32 = lc.write_f32(model, tmp_path, template)
    exact = lc.quality(f32, w, ref, threads=2)
    assert exact["scored_tokens"] == 2 * w.scored_tokens
    assert exact["kld_mean"] < 1e-4 and exact["top1_agreement"] > 0.98
    q4 = lc.quality(lc.build(f32, quantize.Mix("Q4_0"), tmp_path / "q4.gguf"), w, ref, threads=2)
    assert q4["kld_mean"] > 10 * exact["kld_mean"] and q4["kld_p99"] >= q4["kld_mean"]
    assert abs(q4["perplexity_ratio"] - q4["perplexity"] / q4["teacher_perplexity"]) < 1e-6 * q4["perplexity_ratio"]


def test_unknown_types_are_candidate_errors(tmp_path, template):
    f32 = lc.write_f32(tiny_llama(), tmp_path, template)
    with pytest.raises(CandidateError, match="unknown GGML type"):
        lc.build(f32, quantize.Mix("Q8_0", {"ffn_down": "Q9_9"}), tmp_path / "x.gguf")
    with pytest.raises(CandidateError, match="unknown tensor class"):
        lc.build(f32, quantize.Mix("Q8_0", {"mlp": "Q4_0"}), tmp_path / "x.gguf")
    with pytest.raises(CandidateError, match="importance matrix"):
        lc.build(f32, quantize.Mix("Q4_0", imatrix=True), tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists() and not list(tmp_path.glob(".x.gguf*"))


def test_speed_probe_measures_the_file_in_a_fresh_process(tmp_path, template):
    path = lc.build(lc.write_f32(tiny_llama(), tmp_path, template), quantize.Mix("Q8_0"), tmp_path / "q8.gguf")
    s = lc.measure_speed(path, lc.LMWorkload(prompt_tokens=16, gen_tokens=4, context_tokens=64), threads=1,
                         rounds=2)
    assert s["ttft_ms"] > 0 and 0 < s["tpot_p50_ms"] <= s["tpot_p99_ms"]
    assert s["decode_tok_s"] == pytest.approx(1000 / s["tpot_p50_ms"], rel=0.5)
    assert 0 < s["peak_rss_mb"] < 500 and "fresh process" in s["speed_detail"]


def test_transformers_reads_our_gguf_back_with_the_same_quality(tmp_path, template):
    """The shipped GGUF loads in transformers (its GGUF loader dequantizes) and scores within the standard
    error of what llama.cpp measured on it."""
    from transformers import AutoModelForCausalLM

    model = tiny_llama()
    w = windows()
    ref = tmp_path / "ref.safetensors"
    lm.write_reference(FAM, model, w, ref)
    path = lc.build(lc.write_f32(model, tmp_path, template), quantize.Mix("Q8_0", {"ffn_down": "Q4_0"}),
                    tmp_path / "ship.gguf")
    measured = lc.quality(path, w, ref, threads=2)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32).eval()
    parts = [causal_lm.score_window(causal_lm.teacher_logp(ref, i),
                                    lm.reference_outputs(FAM, loaded, row)[w.first_scored:-1],
                                    row[w.first_scored + 1:]) for i, row in enumerate(w.ids)]
    again = causal_lm.summarize(causal_lm.TokenScores.concat(parts))
    assert abs(again["kld_mean"] - measured["kld_mean"]) <= max(measured["kld_mean_se"], 1e-5)
    assert abs(again["top1_agreement"] - measured["top1_agreement"]) <= 2 * max(measured["top1_agreement_se"], 0.01)

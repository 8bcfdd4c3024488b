"""The llama_lm family (first step of the edge-LLM issue): GQA-aware cuts that compute exactly what zeroing
the cut units computes, tied embeddings kept tied, depth ranked by block importance, and the way back to a
stock LlamaForCausalLM. Tiny models built here; no network."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import perturb_vectors
from search import families
from search.backends.onnxruntime import OnnxRuntime
from search.candidate import QuantParams

FAM = families.get("llama_lm")


def tiny_llama(seed=0, tied=True) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=96, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, tie_word_embeddings=tied,
                         attn_implementation="eager", use_cache=False)
    return perturb_vectors(LlamaForCausalLM(config).eval(), 0.1)  # like a trained model: norms not all ones


def batch(n=3, length=10, vocab=96, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def out(model, features):
    with torch.no_grad():
        return FAM.forward(model, features).outputs


def test_shape_and_tensors_count_every_parameter():
    for tied in (True, False):
        model = tiny_llama(tied=tied)
        shape = FAM.shape_of(model)
        assert (shape.layers, shape.hidden, shape.heads, shape.kv_heads, shape.ffn, shape.head_dim) == \
            (3, 64, (4, 4, 4), (2, 2, 2), (128, 128, 128), 16)
        assert shape.tied_embeddings is tied and FAM.group_size(shape) == 2
        assert sum(t.elements for t in FAM.tensors(shape)) == sum(p.numel() for p in model.parameters())


def test_head_cut_keeps_whole_kv_groups_and_equals_zeroing_them():
    model, f = tiny_llama(), batch()
    zeroed = tiny_llama()
    with torch.no_grad():  # group 1 (query heads 2, 3 and KV head 1) removed by zeroing its output columns
        zeroed.model.layers[0].self_attn.o_proj.weight[:, 32:64] = 0
    FAM.slice_heads(FAM.blocks(model)[0], [1])  # asks for query head 1: its whole group 0 (heads 0, 1) stays
    shape = FAM.shape_of(model)
    assert shape.heads == (2, 4, 4) and shape.kv_heads == (1, 2, 2)
    torch.testing.assert_close(out(model, f), out(zeroed, f), atol=1e-5, rtol=1e-5)


def test_ffn_cut_equals_zeroing_the_channels():
    model, zeroed, f = tiny_llama(), tiny_llama(), batch()
    keep = torch.arange(0, 128, 2)
    with torch.no_grad():
        zeroed.model.layers[1].mlp.down_proj.weight[:, 1::2] = 0
    FAM.slice_ffn(FAM.blocks(model)[1], keep)
    assert FAM.shape_of(model).ffn == (128, 64, 128)
    torch.testing.assert_close(out(model, f), out(zeroed, f), atol=1e-5, rtol=1e-5)


def test_width_cut_runs_and_stays_tied():
    model, f = tiny_llama(), batch()
    FAM.slice_hidden(model, torch.arange(0, 64, 2))
    FAM.sync_config(model)
    assert FAM.shape_of(model).hidden == 32 and model.lm_head.weight is model.model.embed_tokens.weight
    assert out(model, f).shape == (3, 10, 96)


def test_cut_model_goes_back_to_a_stock_llama(tmp_path):
    model, f = tiny_llama(), batch()
    FAM.select_layers(model, [0, 2])
    FAM.slice_heads(FAM.blocks(model)[1], [3])
    FAM.slice_ffn(FAM.blocks(model)[0], torch.arange(100))
    FAM.sync_config(model)
    FAM.to_standard(model).save_pretrained(tmp_path / "hf")
    stock = LlamaForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    assert stock.config.num_hidden_layers == 2 and stock.config.num_key_value_heads == 2
    torch.testing.assert_close(out(stock, f), out(model, f), atol=1e-5, rtol=1e-5)


def test_block_importance_ranks_a_do_nothing_block_first():
    model, f = tiny_llama(), batch()
    with torch.no_grad():  # block 1 adds nothing to the residual stream
        FAM.blocks(model)[1].self_attn.o_proj.weight.zero_()
        FAM.blocks(model)[1].mlp.down_proj.weight.zero_()
    scores = FAM.block_importance(model, f)
    assert scores.shape == (3,) and scores[1].item() == pytest.approx(0.0, abs=1e-6)
    assert int(scores.argmin()) == 1 and (scores[[0, 2]] > 1e-3).all()


def test_vocabulary_trimming_is_refused_for_a_language_model():
    from search.compress import vocab
    from search.errors import CandidateError

    with pytest.raises(CandidateError, match="must still emit every token"):
        vocab.trim(tiny_llama(), torch.arange(10), 0)


def test_kv_cache_and_onnx_pricing_match_the_shape(tmp_path):
    model = tiny_llama(tied=False)
    shape = FAM.shape_of(model)
    assert FAM.kv_cache_bytes(shape, context=100) == 3 * 2 * 2 * 16 * 100 * 2  # layers x K,V x kv x d x ctx x f16
    ort = OnnxRuntime()
    path = ort.build(model, QuantParams(32), tmp_path / "a")
    assert ort.weight_bytes(path) == pytest.approx(ort.predicted_weight_bytes(shape, QuantParams(32)), rel=0.03)


def test_students_keep_whole_kv_groups():
    from search.compress import distill
    from search.candidate import DistillParams
    from search.errors import CandidateError

    teacher, f = tiny_llama(), batch()
    limits = FAM.limits(FAM.shape_of(teacher))
    assert limits.head_group == 2 and [limits.heads_for(h, 64) for h in (1, 2, 3, 4, 9)] == [2, 2, 2, 4, 4]
    importance = FAM.measure_importance(teacher, f)
    student = distill.build_student(teacher, DistillParams(layers=2, hidden=64, heads=2, ffn=64), importance)
    shape = FAM.shape_of(student)
    assert (shape.layers, shape.heads, shape.kv_heads, shape.ffn) == (2, (2, 2), (1, 1), (64, 64))
    assert out(student, f).shape == (3, 10, 96)
    with pytest.raises(CandidateError, match="whole number of 2-head KV groups"):
        distill.build_student(teacher, DistillParams(layers=2, hidden=64, heads=3, ffn=64), importance)


def test_the_planned_shape_is_the_built_one():
    from search.candidate import Candidate, DistillParams, PruneParams, QuantParams
    from search.compress import distill
    from search.flows.text_classification.pipeline import planned_shape

    teacher, f = tiny_llama(), batch()
    cand = Candidate(DistillParams(layers=2, hidden=48, heads=2, ffn=64), PruneParams(), QuantParams(32))
    student = distill.build_student(teacher, cand.distill, FAM.measure_importance(teacher, f))
    assert planned_shape(FAM.shape_of(teacher), cand) == FAM.shape_of(student)

"""The pieces of the language-model search that need no llama.cpp: the recipe, its space, the cuts (blocks by
influence, FFN channels, KV groups), recovery by distillation, the causal_lm metrics, and the exact mix solver."""
from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import optuna
import pytest
import torch

from search import families
from search.backends.llama_cpp import mixes
from search.flows.causal_lm.recipe import LMRecipe
from search.flows.causal_lm import student as lm_student
from search.errors import ConfigError
from search.flows.causal_lm.space import check_against_teacher, load_lm_space
from search.tasks import causal_lm
from test_llama_family import tiny_llama

FAM = families.get("llama_lm")


def test_metrics_match_their_definitions():
    rng = np.random.default_rng(0)
    t = torch.log_softmax(torch.as_tensor(rng.normal(size=(50, 20))), -1)
    s_logits = rng.normal(size=(50, 20))
    nxt = rng.integers(0, 20, 50)
    sc = causal_lm.TokenScores.concat([causal_lm.score_window(t[i:i + 10], s_logits[i:i + 10], nxt[i:i + 10])
                                       for i in range(0, 50, 10)])  # five windows of ten scored tokens
    s = torch.log_softmax(torch.as_tensor(s_logits), -1)
    want_kld = (t.exp() * (t - s)).sum(-1).numpy()
    np.testing.assert_allclose(sc.kld, want_kld, rtol=1e-9)
    m = causal_lm.summarize(sc)
    assert m["perplexity"] == pytest.approx(math.exp(-s[torch.arange(50), nxt].mean().item()))
    assert m["top1_agreement"] == pytest.approx(float((t.argmax(-1) == s.argmax(-1)).float().mean()))
    # the error across the five windows (their means), not across 50 tokens taken as independent
    assert m["kld_mean_se"] == pytest.approx(want_kld.reshape(5, 10).mean(1).std(ddof=1) / math.sqrt(5))
    assert m["se_windows"] == 5
    assert m["perplexity_ratio"] == pytest.approx(m["perplexity"] / m["teacher_perplexity"])
    same = causal_lm.summarize(causal_lm.TokenScores.concat([causal_lm.score_window(t, t.numpy(), nxt)]))
    assert same["kld_mean"] < 1e-12 and same["top1_agreement"] == 1.0


def test_windows_are_fixed_and_scored_in_their_second_half():
    w = causal_lm.windows(np.arange(2, 1000), length=64, count=3, bos_id=1)
    assert w.ids.shape == (3, 64) and (w.ids[:, 0] == 1).all() and w.ids[1, 1] == 2 + 63
    assert w.first_scored == 32 and w.scored_tokens == 31
    with pytest.raises(ValueError, match="need"):
        causal_lm.windows(np.arange(100), 64, 3, 1)


def test_space_suggests_recipes_inside_the_teacher():
    space = load_lm_space("llm_types")  # types sampled per class (spaces/llm.yaml leaves them to the solver)
    model = tiny_llama()
    shape = FAM.shape_of(model)
    limits = FAM.limits(shape)
    with pytest.raises(ConfigError, match="cut.drop_layers"):
        check_against_teacher(space, limits, shape)  # the shipped space is for SmolLM2 (30 layers), not 3
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    smollm2 = dataclasses.replace(limits, ffn=1536, heads=9, head_group=3)  # what the shipped space is for
    seen = set()
    for _ in range(20):
        recipe = space.suggest(study.ask(), limits=smollm2)
        assert 0 <= recipe.drop_layers <= 8 and dict(recipe.types)["ffn_down"] in mixes.CANDIDATE_TYPES
        assert recipe.recovery_steps == 0 or recipe.cuts  # no recovery for an uncut model
        assert recipe.ffn in (None, 1024, 1280)  # 1536 = all: no cut
        seen.add(recipe.label())
    assert len(seen) > 10


def test_cuts_follow_the_scores_and_recovery_lowers_the_kl(monkeypatch):
    teacher = tiny_llama()
    ids = np.random.default_rng(0).integers(0, 96, 2048)
    scores = lm_student.measure_scores(FAM, teacher, ids, window=64, count=4)
    assert scores.blocks.shape == (3,)
    assert lm_student.layers_kept(scores, 1) == sorted(set(range(3)) - {int(scores.blocks.argmin())})
    student = lm_student.cut(FAM, teacher, LMRecipe(drop_layers=1, ffn=64, kv_groups=1), scores)
    shape = FAM.shape_of(student)
    assert (shape.layers, shape.ffn, shape.kv_heads, shape.heads) == (2, (64, 64), (1, 1), (2, 2))
    f = FAM.sequence_features(torch.as_tensor(ids[:64]).unsqueeze(0))
    with torch.no_grad():
        before = float(causal_lm.kd_loss(FAM.forward(student, f).outputs, FAM.forward(teacher, f).outputs))
    monkeypatch.setattr(lm_student, "RECOVERY_WINDOW", 64)
    info = lm_student.recover(FAM, student, teacher, ids, steps=12, seed=0, log=lambda s: None)
    with torch.no_grad():
        after = float(causal_lm.kd_loss(FAM.forward(student, f).outputs, FAM.forward(teacher, f).outputs))
    assert info["recovery_steps"] == 12 and after < before
    with pytest.raises(Exception, match="drop fewer"):
        lm_student.cut(FAM, teacher, LMRecipe(drop_layers=3), scores)


def test_solver_front_is_exact_and_respects_what_rows_can_hold():
    shapes = mixes.class_shapes({"blk.0.attn_q.weight": (576, 576), "blk.0.ffn_down.weight": (576, 1536),
                                 "token_embd.weight": (1000, 576)})
    opts = mixes.options(shapes, excluded=("Q4_1", "Q5_1"))
    assert "Q4_K" not in opts["attn_qk"] and "Q4_K" in opts["ffn_down"] and "Q5_1" not in opts["embedding"]
    inc = {(c, t): (0.01 if t != "Q8_0" else 0.0) * (1 + i) for c in opts for i, t in enumerate(opts[c])}
    front = mixes.front(shapes, opts, inc, reference_kld=0.001)
    assert all(a.bytes < b.bytes and a.kld > b.kld for a, b in zip(front, front[1:]))
    every = [(sum(s.bytes(t) for s, t in zip(shapes, combo)), 0.001 + sum(inc[(s.name, t)] for s, t in zip(shapes, combo)))
             for combo in itertools.product(*(opts[s.name] for s in shapes))]
    for p in front:  # nothing dominates a front point
        assert not any(b <= p.bytes and k < p.kld - 1e-12 for b, k in every)
    cap = front[len(front) // 2].bytes
    assert mixes.best_within(front, cap).kld == min(k for b, k in every if b <= cap)

"""The estimate for a spec-only device: labelled, monotone in the right knobs, sparsity credited only as told."""
from __future__ import annotations

from dataclasses import replace

import pytest

from search.candidate import QuantParams
from search.families.base import ModelShape
from search.measure import roofline
from search.target import load_target

SHAPE = ModelShape(family="bert_cls", layers=6, hidden=384, heads=(12,) * 6, ffn=(1536,) * 6, vocab=30522,
                   head_dim=32, positions=512, segments=2, outputs=2)


@pytest.fixture
def orin():
    return load_target("jetson_orin").device


def test_estimate_is_labelled_and_p99_uses_tail_factor(orin):
    lat = roofline.estimate(SHAPE, QuantParams(32), orin, 1, 128)
    assert lat.source == "estimated" and lat.p99_ms == pytest.approx(lat.p50_ms * orin.tail_factor)


def test_by_hand_for_one_compute_bound_linear(orin):
    ops = roofline.operators(SHAPE, QuantParams(32), 1, 128, False)
    q = next(o for o in ops if o["name"] == "L0.q")
    assert q["flops"] == 2 * 128 * 384 * 384 and q["bytes"] == 4 * 384 * 384 + 4 * 128 * (384 + 384)
    assert len(ops) == 2 + 6 * 12  # embeddings, 12 kernels per layer, head


def test_smaller_and_lower_precision_is_faster(orin):
    fp32 = roofline.estimate(SHAPE, QuantParams(32), orin, 1, 128).p50_ms
    int8 = roofline.estimate(SHAPE, QuantParams(8, None, "dynamic_int8"), orin, 1, 128).p50_ms
    small = roofline.estimate(replace(SHAPE, layers=2, heads=(12,) * 2, ffn=(1536,) * 2), QuantParams(32), orin,
                              1, 128).p50_ms
    assert int8 < fp32 and small < fp32 / 2


def test_2_4_sparsity_credited_only_when_the_target_says_so(orin):
    q = QuantParams(8, None, "dynamic_int8")
    wide = replace(SHAPE, hidden=2048, heads=(64,) * 6, ffn=(8192,) * 6)  # compute-bound Linears
    dense = roofline.estimate(wide, q, orin, 8, 512).p50_ms
    assert roofline.estimate(wide, q, orin, 8, 512, sparse_2_4=True).p50_ms == dense  # speedup 1.0: no credit
    credited = replace(orin, sparse_2_4_speedup=1.5)
    assert roofline.estimate(wide, q, credited, 8, 512, sparse_2_4=True).p50_ms < dense
    # a memory-bound shape gains nothing from sparse math, as a roofline should say
    small = roofline.estimate(SHAPE, q, credited, 1, 128, sparse_2_4=True).p50_ms
    assert small == roofline.estimate(SHAPE, q, orin, 1, 128).p50_ms

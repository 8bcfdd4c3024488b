"""Pruning does exactly what was asked: measured sparsity and shapes equal the request."""
from __future__ import annotations

import pytest
import torch

from search import arch
from search.candidate import Candidate, DistillParams, PruneParams, QuantParams
from search.compress import prune
from search.pipeline import planned_shape
from search.train import KD, logits_of


def _kd(model, split):
    return KD(logits_of(model, split), 2.0, 0.5)


def _calib(split):
    return split.input_ids[:16], split.attention_mask[:16]


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.9])
def test_unstructured_sparsity_equals_ratio(model, split, ratio):
    prune.apply(model, PruneParams("unstructured", ratio, recovery_steps=3), train_split=split,
                kd=_kd(model, split), calibration=_calib(split))
    for lin in arch.encoder_linears(model):  # layer-wise: every matrix, to rounding of one weight
        assert abs((lin.weight == 0).float().mean().item() - ratio) <= 1 / lin.weight.numel()
    assert prune.weight_sparsity(model) == pytest.approx(ratio, abs=1e-4)
    assert not hasattr(arch.encoder_linears(model)[0], "weight_orig")  # masks made permanent


def test_two_four_every_group_of_four_has_two_zeros(model, split):
    prune.apply(model, PruneParams("2:4", 0.5, recovery_steps=3), train_split=split, kd=_kd(model, split),
                calibration=_calib(split))
    for lin in arch.encoder_linears(model):
        groups = lin.weight.reshape(lin.out_features, -1, 4)
        assert ((groups == 0).sum(-1) >= 2).all()
    assert prune.weight_sparsity(model) == pytest.approx(0.5, abs=1e-6)


def test_two_four_mask_keeps_largest():
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 4.0, 0.0, -0.2, 1.0]])
    assert prune.mask_2_4(w).tolist() == [[0, 1, 1, 0, 1, 0, 0, 1]]


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_structured_shrinks_matrices_as_planned(model, split, ratio):
    teacher_shape = arch.shape_of(model)
    prune.apply(model, PruneParams("structured", ratio, recovery_steps=2), train_split=split,
                kd=_kd(model, split), calibration=_calib(split))
    shape = arch.shape_of(model)
    cand = Candidate(DistillParams(3, 128, 4, 256), PruneParams("structured", ratio), QuantParams())
    assert shape == planned_shape(teacher_shape, cand)
    layer = model.bert.encoder.layer[0]
    assert layer.attention.self.query.weight.shape == (shape.heads[0] * 32, 128)
    assert layer.intermediate.dense.weight.shape == (shape.ffn[0], 128)
    ids, mask, _ = split.batch(torch.arange(4))
    assert model(input_ids=ids, attention_mask=mask).logits.shape == (4, 2)


def test_structured_removes_least_important_head(model, split):
    layer = model.bert.encoder.layer[0]
    with torch.no_grad():  # make head 2 contribute nothing: it must be the one removed
        layer.attention.output.dense.weight[:, 64:96] = 0
    prune.structured(model, 0.25, arch.measure_importance(model, *_calib(split)))
    kept_value_rows = model.bert.encoder.layer[0].attention.output.dense.weight
    assert kept_value_rows.shape[1] == 96 and (kept_value_rows.abs().sum(0) > 0).all()



def test_pruned_model_round_trips_through_from_pretrained(model, split, tmp_path):
    from transformers import AutoModelForSequenceClassification

    prune.apply(model, PruneParams("structured", 0.5, recovery_steps=2), train_split=split, kd=_kd(model, split),
                calibration=_calib(split))
    arch.to_standard(model).save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, attn_implementation="eager")
    assert torch.allclose(logits_of(loaded, split), logits_of(model, split), atol=1e-5)
    assert (tmp_path / "model.safetensors").is_file()

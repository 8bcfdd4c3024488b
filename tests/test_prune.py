"""Pruning does exactly what was asked: measured sparsity and shapes equal the request."""
from __future__ import annotations

import pytest
import torch

from conftest import calib
from search import families
from search.candidate import Candidate, DistillParams, PruneParams, QuantParams
from search.compress import prune
from search.flows.text_classification.pipeline import planned_shape
from search.tasks import classification
from search.train import KD, outputs_of

BERT = families.get("bert_cls")


def _kd(model, split):
    return KD(outputs_of(model, split), 2.0, 0.5)


def _calib(split):
    return calib(split, 16)


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.9])
def test_unstructured_sparsity_equals_ratio(model, split, ratio):
    prune.apply(model, PruneParams("unstructured", ratio, recovery_steps=3), train_split=split,
                kd=_kd(model, split), calibration=_calib(split))
    for lin in BERT.linears(model):  # layer-wise: every matrix, to rounding of one weight
        assert abs((lin.weight == 0).float().mean().item() - ratio) <= 1 / lin.weight.numel()
    assert prune.weight_sparsity(model) == pytest.approx(ratio, abs=1e-4)
    assert not hasattr(BERT.linears(model)[0], "weight_orig")  # masks made permanent


def test_two_four_every_group_of_four_has_two_zeros(model, split):
    prune.apply(model, PruneParams("2:4", 0.5, recovery_steps=3), train_split=split, kd=_kd(model, split),
                calibration=_calib(split))
    for lin in BERT.linears(model):
        groups = lin.weight.reshape(lin.out_features, -1, 4)
        assert ((groups == 0).sum(-1) >= 2).all()
    assert prune.weight_sparsity(model) == pytest.approx(0.5, abs=1e-6)


def test_two_four_mask_keeps_largest():
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 4.0, 0.0, -0.2, 1.0]])
    assert prune.mask_2_4(w).tolist() == [[0, 1, 1, 0, 1, 0, 0, 1]]


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_structured_shrinks_matrices_as_planned(model, split, ratio):
    teacher_shape = BERT.shape_of(model)
    prune.apply(model, PruneParams("structured", ratio, recovery_steps=2), train_split=split,
                kd=_kd(model, split), calibration=_calib(split))
    shape = BERT.shape_of(model)
    cand = Candidate(DistillParams(3, 128, 4, 256), PruneParams("structured", ratio), QuantParams())
    assert shape == planned_shape(teacher_shape, cand)
    layer = model.bert.encoder.layer[0]
    assert layer.attention.self.query.weight.shape == (shape.heads[0] * 32, 128)
    assert layer.intermediate.dense.weight.shape == (shape.ffn[0], 128)
    features, _ = split.batch(torch.arange(4))
    assert BERT.forward(model, features).outputs.shape == (4, 2)


def test_structured_removes_least_important_head(model, split):
    layer = model.bert.encoder.layer[0]
    with torch.no_grad():  # make head 2 contribute nothing: it must be the one removed
        layer.attention.output.dense.weight[:, 64:96] = 0
    prune.structured(model, 0.25, BERT.measure_importance(model, _calib(split)))
    kept_value_rows = model.bert.encoder.layer[0].attention.output.dense.weight
    assert kept_value_rows.shape[1] == 96 and (kept_value_rows.abs().sum(0) > 0).all()



def test_pruned_model_round_trips_through_from_pretrained(model, split, tmp_path):
    from transformers import AutoModelForSequenceClassification

    prune.apply(model, PruneParams("structured", 0.5, recovery_steps=2), train_split=split, kd=_kd(model, split),
                calibration=_calib(split))
    BERT.to_standard(model).save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, attn_implementation="eager")
    assert torch.allclose(outputs_of(loaded, split), outputs_of(model, split), atol=1e-5)
    assert (tmp_path / "model.safetensors").is_file()


def test_cubic_schedule_ends_at_the_ratio_and_prunes_most_early():
    assert prune.schedule(0.6, 1) == [0.6]
    steps = prune.schedule(0.8, 3)
    assert steps[-1] == pytest.approx(0.8) and steps == sorted(steps)
    assert steps[0] > 0.8 / 3 and steps[1] - steps[0] > steps[2] - steps[1]


@pytest.mark.parametrize("ptype,ratio", [("unstructured", 0.7), ("structured", 0.5)])
def test_iterative_rounds_reach_exactly_the_asked_ratio(model, split, ptype, ratio):
    teacher_shape = BERT.shape_of(model)
    rounds = []
    orig_train = prune.train
    prune.train = lambda m, data, steps, **kw: rounds.append((prune.weight_sparsity(m), BERT.shape_of(m), steps))
    try:
        prune.apply(model, PruneParams(ptype, ratio, recovery_steps=10, iterations=3), train_split=split,
                    kd=_kd(model, split), calibration=_calib(split))
    finally:
        prune.train = orig_train
    assert [steps for *_, steps in rounds] == [3, 3, 4]  # the recovery budget is shared, not multiplied
    if ptype == "unstructured":
        assert [round(s, 3) for s, *_ in rounds] == [round(r, 3) for r in prune.schedule(ratio, 3)]
        assert prune.weight_sparsity(model) == pytest.approx(ratio, abs=1e-3)
    else:
        ffn = [shape.ffn[0] for _, shape, _ in rounds]
        assert ffn == [round(256 * (1 - r)) for r in prune.schedule(ratio, 3)]
        cand = Candidate(DistillParams(3, 128, 4, 256), PruneParams("structured", ratio), QuantParams())
        assert BERT.shape_of(model) == planned_shape(teacher_shape, cand)


def test_global_scope_prunes_small_matrices_harder_when_their_weights_are_small(model, split):
    linears = BERT.linears(model)
    with torch.no_grad():
        linears[0].weight.mul_(0.01)  # one matrix of tiny weights: a global threshold takes it first
    prune.apply(model, PruneParams("unstructured", 0.3, scope="global"), train_split=split, kd=_kd(model, split),
                calibration=_calib(split))
    assert prune.weight_sparsity(model) == pytest.approx(0.3, abs=1e-4)
    assert (linears[0].weight == 0).float().mean().item() == 1.0
    assert (linears[1].weight == 0).float().mean().item() < 0.3


def test_wanda_keeps_weights_on_loud_inputs():
    lin = torch.nn.Linear(8, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.1, 1.0, 0.1, 1.0, 0.1, 1.0, 0.1]] * 2))
    norms = {lin: torch.tensor([1.0, 100.0] * 4)}  # the small weights sit on 100x louder inputs
    assert prune.mask_2_4(prune.scores(lin, "magnitude", None)).tolist()[0] == [1, 0, 1, 0, 1, 0, 1, 0]
    assert prune.mask_2_4(prune.scores(lin, "wanda", norms)).tolist()[0] == [0, 1, 0, 1, 0, 1, 0, 1]
    mask = prune.unstructured_masks([lin], 0.5, "wanda", "layer", norms)[0]
    assert mask.tolist() == [[0, 1, 0, 1, 0, 1, 0, 1]] * 2  # per output row, like the paper


def test_wanda_input_norms_are_measured_over_real_tokens(model, split):
    features = _calib(split)
    ids, mask = features["input_ids"], features["attention_mask"]
    norms = prune.input_norms(model, features)
    lin = model.bert.encoder.layer[0].attention.self.query
    x = model.bert.embeddings(input_ids=ids)[mask.bool()]
    torch.testing.assert_close(norms[lin], x.norm(dim=0), rtol=1e-4, atol=1e-4)


def test_gradient_importance_ranks_a_head_the_loss_depends_on_first(model, split):
    features, labels = split.batch(torch.arange(32))
    layer = model.bert.encoder.layer[0]
    with torch.no_grad():
        layer.attention.output.dense.weight[:, 32:64] = 0  # head 1 cannot change the loss: Taylor score 0
    imp = BERT.gradient_importance(model, features, labels, classification.loss)
    assert imp.heads[0][1] == 0 and (imp.heads[0][[0, 2, 3]] > 0).all()
    assert [len(h) for h in imp.heads] == [4, 4, 4] and [len(f) for f in imp.ffn] == [256] * 3
    assert all(p.grad is None for p in model.parameters())  # no gradients left behind
    prune.apply(model, PruneParams("structured", 0.25, importance="gradient"), train_split=split,
                kd=_kd(model, split), calibration=features, labels=labels)
    assert BERT.shape_of(model).heads == (3, 3, 3)

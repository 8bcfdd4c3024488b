"""Students are cut from the teacher exactly as asked, and start from the teacher's weights."""
from __future__ import annotations

import pytest
import torch

from conftest import calib, random_split
from search import families
from search.candidate import DistillParams
from search.compress import distill
from search.compress.prune import top_k
from search.train import KD, outputs_of

BERT = families.get("bert_cls")


@pytest.mark.parametrize("n_teacher, n_student, expected", [
    (6, 1, [5]), (6, 2, [0, 5]), (6, 3, [0, 2, 5]), (6, 6, [0, 1, 2, 3, 4, 5]), (3, 2, [0, 2])])
def test_teacher_layers_evenly_spaced_keep_last(n_teacher, n_student, expected):
    assert distill.teacher_layers(n_teacher, n_student) == expected


@pytest.mark.parametrize("layers, hidden, heads, ffn", [(1, 64, 2, 64), (2, 96, 3, 128), (3, 128, 4, 256),
                                                        (2, 128, 1, 32)])
def test_student_has_the_sampled_shape(model, split, layers, hidden, heads, ffn):
    imp = BERT.measure_importance(model, calib(split, 16))
    student = distill.build_student(model, DistillParams(layers, hidden, heads, ffn), imp)
    shape = BERT.shape_of(student)
    assert (shape.layers, shape.hidden, shape.heads, shape.ffn) == (layers, hidden, (heads,) * layers,
                                                                   (ffn,) * layers)
    assert student.config.num_hidden_layers == layers and student.config.hidden_size == hidden
    features, _ = split.batch(torch.arange(4))
    assert BERT.forward(student, features).outputs.shape == (4, 2)
    assert torch.allclose(outputs_of(BERT.to_standard(student), split), outputs_of(student, split), atol=1e-5)


def test_full_size_student_is_the_teacher(model, split):
    imp = BERT.measure_importance(model, calib(split, 16))
    student = distill.build_student(model, DistillParams(3, 128, 4, 256), imp)
    assert torch.allclose(outputs_of(student, split), outputs_of(model, split), atol=1e-5)


def test_cut_keeps_teacher_weights(model, split):
    imp = BERT.measure_importance(model, calib(split, 16))
    student = distill.build_student(model, DistillParams(1, 128, 4, 256), imp)
    # one layer kept: the teacher's last, weights copied unchanged
    assert torch.equal(student.bert.encoder.layer[0].output.dense.weight,
                       model.bert.encoder.layer[2].output.dense.weight)


def test_too_large_student_is_a_candidate_error(model, split):
    from search.errors import CandidateError

    imp = BERT.measure_importance(model, calib(split, 16))
    with pytest.raises(CandidateError):
        distill.build_student(model, DistillParams(4, 128, 4, 256), imp)


def test_distillation_trains_towards_teacher_and_caches(tmp_path, model):
    data = random_split(n=64)
    teacher_outputs = outputs_of(model, data) * 5
    imp = BERT.measure_importance(model, calib(data, 16))
    params = DistillParams(1, 64, 2, 64, temperature=1.0, alpha=1.0, epochs=3)
    before = distill.build_student(model, params, imp)
    kd = KD(teacher_outputs, 1.0, 1.0)
    idx = torch.arange(len(data))
    loss_before = kd.loss(outputs_of(before, data), data.labels, idx).item()
    student = distill.apply(model, params, importance=imp, train_split=data, teacher_outputs=teacher_outputs,
                            cache_dir=tmp_path, task_key="t", seed=0, log=lambda s: None)
    assert kd.loss(outputs_of(student, data), data.labels, idx).item() < loss_before
    cached = list(tmp_path.glob("student-*.safetensors"))
    assert len(cached) == 1
    again = distill.apply(model, params, importance=imp, train_split=data, teacher_outputs=teacher_outputs,
                          cache_dir=tmp_path, task_key="t", seed=0, log=lambda s: None)
    assert torch.equal(outputs_of(again, data), outputs_of(student, data))


def test_task_vocabulary_trims_rows_and_keeps_ids(model, split, tmp_path):
    from search.backends.onnxruntime import OnnxRuntime
    from search.candidate import QuantParams
    from search.compress import vocab

    ORT = OnnxRuntime()
    imp = BERT.measure_importance(model, calib(split, 16))
    keep = vocab.task_token_ids(split.features["input_ids"][:8], [0, 1])
    student = distill.build_student(model, DistillParams(3, 128, 4, 256, vocab="task"), imp, keep, unk_id=1)
    shape = BERT.shape_of(student)
    assert shape.vocab == len(keep) < 120 and shape.id_map_size == 120
    # on the texts whose tokens were kept, the trimmed model is exactly the untrimmed one
    seen = split.subset(8)
    assert torch.allclose(outputs_of(student, seen), outputs_of(model, seen), atol=1e-5)
    # an id outside the kept set reads [UNK]'s row
    emb = student.bert.embeddings.word_embeddings
    unseen = int(next(i for i in range(120) if i not in set(keep.tolist())))
    assert torch.equal(emb(torch.tensor([unseen])), model.bert.embeddings.word_embeddings(torch.tensor([1])))
    # the stock HF copy and the ONNX artifact agree with it; the artifact is smaller and byte-predicted
    assert torch.allclose(outputs_of(BERT.to_standard(student), split), outputs_of(student, split), atol=1e-5)
    full = ORT.weight_bytes(ORT.build(model, QuantParams(32), tmp_path / "full"))
    path = ORT.build(student, QuantParams(32), tmp_path / "trim")
    assert ORT.weight_bytes(path) == pytest.approx(ORT.predicted_weight_bytes(shape, QuantParams(32)), rel=0.03)
    assert ORT.weight_bytes(path) < full


def test_random_init_has_the_same_shape_and_none_of_the_teachers_weights(model, split):
    imp = BERT.measure_importance(model, calib(split, 16))
    params = DistillParams(2, 96, 3, 128, init="random")
    student = distill.build_student(model, params, imp, seed=3)
    teacher_cut = distill.build_student(model, DistillParams(2, 96, 3, 128), imp)
    assert BERT.shape_of(student) == BERT.shape_of(teacher_cut)
    for (name, p), q in zip(student.named_parameters(), teacher_cut.parameters()):
        assert not torch.equal(p, q) or p.dim() == 1, name  # only LayerNorm ones / zero biases may repeat
    weights = torch.cat([m.weight.reshape(-1) for m in BERT.linears(student)])
    assert weights.std().item() == pytest.approx(0.02, rel=0.05) and weights.mean().abs().item() < 1e-3
    again = distill.build_student(model, params, imp, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(student.parameters(), again.parameters()))  # seeded


@pytest.mark.parametrize("kind", ["hidden", "attention"])
def test_transfer_is_zero_for_the_teacher_itself_and_pulls_students_toward_it(model, split, kind):
    from search.train import Transfer, train

    weights = {"hidden_weight": 1.0} if kind == "hidden" else {"attention_weight": 1.0}
    imp = BERT.measure_importance(model, calib(split, 16))
    features, _ = split.batch(torch.arange(16))
    same = Transfer(model, [0, 1, 2], torch.arange(128), [[0, 1, 2, 3]] * 3, **weights)
    out = BERT.forward(model, features, hidden_states=True, attentions=True)
    assert same.loss(out, features).item() == pytest.approx(0.0, abs=1e-6)

    kd = KD(outputs_of(model, split), 2.0, 1.0)
    losses = {}
    for on in (False, True):  # same steps, same seed: with and without the transfer term
        student = distill.build_student(model, DistillParams(2, 96, 3, 128), imp)
        measure = Transfer(model, student.config.search_teacher_layers, top_k(imp.hidden, 96),
                           student.config.search_teacher_heads, **weights)
        train(student, split, steps=20, lr=1e-3, kd=kd, transfer=Transfer(
            model, student.config.search_teacher_layers, top_k(imp.hidden, 96),
            student.config.search_teacher_heads, **{k: 10.0 for k in weights}) if on else None)
        with torch.no_grad():
            out = BERT.forward(student, features, hidden_states=True, attentions=True)
            losses[on] = measure.loss(out, features).item()
    assert losses[True] < 0.7 * losses[False], losses


def test_student_heads_map_to_the_teacher_heads_they_were_cut_from(model, split):
    imp = BERT.measure_importance(model, calib(split, 16))
    student = distill.build_student(model, DistillParams(2, 128, 2, 256), imp)
    features, _ = split.batch(torch.arange(4))
    t_att = BERT.forward(model, features, attentions=True).attentions
    s_att = BERT.forward(student, features, attentions=True).attentions
    heads = student.config.search_teacher_heads
    assert [len(h) for h in heads] == [2, 2] and heads[0] == top_k(imp.heads[0], 2).tolist()
    # the first layer sees the same input as the teacher's: its kept heads attend exactly as they did
    torch.testing.assert_close(s_att[0], t_att[0][:, heads[0]], rtol=1e-5, atol=1e-5)

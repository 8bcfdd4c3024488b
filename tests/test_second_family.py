"""The seam holds for a second family: a toy transformer (tests/toy_family.py, unknown to the package) goes
through the same screen -> distill -> prune -> quantize -> build -> measure code as the BERT family."""
from __future__ import annotations

from types import SimpleNamespace

import onnx
import pytest
import torch

from search import families
from search.candidate import Candidate, DistillParams, PruneParams, QuantParams
from search.flows.text_classification.pipeline import kept, make_context, run_candidate, screen
from search.target import load_target
from search.tasks.data import Split
from search.tasks.teacher import Prepared
from search.train import outputs_of, train
from conftest import nbits_of
from toy_family import ToyClassifier, ToyFamily

TARGET = """name: toy_local
device: {latency: measured, memory_mb: 1000, threads: 1}
workload: {batch_size: 1, sequence_length: 12}
budget: {memory_mb: 500, p99_latency_ms: 100, accuracy_floor: {max_drop: 0.5}}
"""


def toy_split(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 40, (n, 12), generator=g)
    lengths = torch.randint(6, 13, (n,), generator=g)
    mask = (torch.arange(12)[None] < lengths[:, None]).long()
    labels = (((ids < 21) & mask.bool()).sum(1) * 2 > lengths).long()  # mostly low tokens: a bag of words
    return Split({"ids": ids * mask, "mask": mask}, lengths, labels, [""] * n)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    families.register(ToyFamily())
    torch.manual_seed(0)
    teacher = ToyClassifier().eval()
    data, val = toy_split(256, 0), toy_split(64, 1)
    train(teacher, data, steps=200, lr=3e-3, seed=0)
    prepared = Prepared(task=None, teacher=teacher, tokenizer=SimpleNamespace(unk_token_id=1, all_special_ids=[0, 1]),
                        classes=[0, 1], train=data, val=val, teacher_train_outputs=outputs_of(teacher, data),
                        key="toy-teacher")
    root = tmp_path_factory.mktemp("toy")
    (root / "target.yaml").write_text(TARGET)
    (root / "cache").mkdir()
    return make_context(prepared, load_target(str(root / "target.yaml")), root / "cache", threads=1)


CANDIDATES = [
    Candidate(DistillParams(layers=2, hidden=32, heads=4, ffn=64, epochs=2), PruneParams(), QuantParams(32)),
    Candidate(DistillParams(layers=2, hidden=24, heads=2, ffn=32, epochs=2),
              PruneParams("structured", 0.5, recovery_steps=4), QuantParams(8, None, "dynamic_int8")),
    Candidate(DistillParams(layers=1, hidden=32, heads=3, ffn=64, epochs=2, vocab="task"),
              PruneParams("unstructured", 0.5, recovery_steps=4), QuantParams(4, 16, method="gptq")),
]


@pytest.mark.parametrize("cand", CANDIDATES, ids=lambda c: c.label())
def test_toy_family_goes_through_screen_build_measure(ctx, cand, tmp_path):
    assert ctx.family.name == "toy_cls" and ctx.backend.name == "onnxruntime"
    predicted, reasons = screen(ctx, cand)
    assert reasons == []
    metrics = run_candidate(ctx, cand, tmp_path / "trial", log=lambda s: None)

    artifact = onnx.load(metrics["artifact"])
    assert [i.name for i in artifact.graph.input] == ["ids", "mask"]  # the family's names, not BERT's
    assert [o.name for o in artifact.graph.output] == ["scores"]
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["latency_source"] == "measured"
    assert metrics["p50_latency_ms"] > 0 and metrics["peak_rss_mb"] > 0
    heads = kept(cand.distill.heads, cand.prune.ratio) if cand.prune.type == "structured" else cand.distill.heads
    assert metrics["heads_per_layer"] == [heads] * cand.distill.layers
    if cand.prune.type == "unstructured":
        assert metrics["weight_sparsity"] >= 0.5
    # the backend's price for the family's tensors matches the bytes it built (plus the graph's few
    # shape-independent constants, which weigh in a toy this small: 1 KB allowed)
    expected = predicted["predicted_memory_mb"] - metrics["activation_mb_estimated"]
    assert metrics["weight_mb"] == pytest.approx(expected, rel=0.05, abs=0.001)


def test_the_teacher_learnt_and_a_student_keeps_most_of_it(ctx, tmp_path):
    teacher_acc = ctx.task_type.evaluate(outputs_of(ctx.prepared.teacher, ctx.prepared.val).numpy(),
                                         ctx.prepared.val.labels.numpy())["accuracy"]
    assert teacher_acc >= 0.8
    metrics = run_candidate(ctx, CANDIDATES[0], tmp_path / "trial", log=lambda s: None)
    assert metrics["accuracy"] >= teacher_acc - 0.25


def test_per_layer_precision_by_the_solver_goes_through_the_pipeline(ctx, tmp_path):
    """A `precision: solver` recipe: the screen prices the least it can ship, the solver chooses after pruning within
    the recipe's share of bytes, the trial records its choice, and the artifact is built at it."""
    from search.measure import memory

    share = 0.3
    cand = Candidate(CANDIDATES[0].distill, PruneParams(), QuantParams(4, 16, precision="solver",
                                                                       high_precision_fraction=share))
    predicted, reasons = screen(ctx, cand)
    assert reasons == []
    metrics = run_candidate(ctx, cand, tmp_path / "trial", log=lambda s: None)
    solver = metrics["precision_solver"]
    assert solver["status"] == "optimal" and len(solver["layer_options"]) == cand.distill.layers
    assert all(b >= 4 for b, _ in solver["layer_options"]) and metrics["precision_s"] >= 0
    from dataclasses import replace

    d = cand.distill
    shape = replace(ctx.family.shape_of(ctx.prepared.teacher), layers=d.layers, hidden=d.hidden,
                    heads=(d.heads,) * d.layers, ffn=(d.ffn,) * d.layers)
    at = lambda o: ctx.backend.predicted_weight_bytes(shape, QuantParams(4, 16, layer_options=(o, o)))  # noqa: E731
    low, high = at((4, 16)), at((8, 16))
    shipped_mb = metrics["weight_mb"]
    # no less than the screen's price (the cheapest allocation), no more than the share of the way to 8 bits
    assert predicted["predicted_memory_mb"] - metrics["activation_mb_estimated"] <= shipped_mb + 0.001
    assert shipped_mb <= (low + share * (high - low)) / memory.MB + 0.001
    built = [nbits_of(n) for n in onnx.load(metrics["artifact"]).graph.node if n.op_type == "MatMulNBits"]
    assert sorted(set(built)) == sorted({b for b, _ in solver["layer_options"]})

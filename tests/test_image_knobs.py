"""The image space's knobs (issue 31, item 2), each cut checked against what it claims and each effect measured:
depth (the least important residual MBConv blocks dropped per stage), input resolution (the artifact takes the
student's size; feature maps shrink with the pixel count), static int8 QDQ on the convolutions (per-channel weights,
ranges calibrated on training images; its accuracy and size measured on the ONNX), and the space file read strictly.
Tiny settings as test_image_flow.py: 32 px, 240 training and 100 validation images."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import onnx
import pytest
import torch

from search import backends, families, flows
from search.errors import ConfigError
from search.measure import memory

pytestmark = pytest.mark.skipif(importlib.util.find_spec("timm") is None or not Path(
    "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(),
    reason="timm or dataset-fashion-mnist not installed (make setup)")
SPEC = flows.inputs("image_classification")


def _lite0(resolution_px: int = 32):
    from search.families.efficientnet_lite import ARCHITECTURE, EfficientNetLite
    from search.torchvision_cpu import import_timm

    torch.manual_seed(0)
    model = import_timm().create_model(ARCHITECTURE, num_classes=10).eval()
    return EfficientNetLite.at_resolution(model, resolution_px)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from test_image_flow import _inputs

    tmp = tmp_path_factory.mktemp("knobs")
    flow, target, space, prepared = _inputs(tmp)
    return flow, target, flow.prepare_run(prepared, target, space, tmp / "cache", 1, 0), tmp


def test_the_space_file_reads_every_knob():
    space = SPEC.load_space(None)  # spaces/vision.yaml
    assert space.path.name == "vision.yaml"
    assert space.channel_keep_ratio == (0.25, 1.0, 0.25) and space.depth_keep_ratio == (0.5, 1.0, 0.25)
    assert space.resolution_px == (32, 64, 16) and space.quant == ("fp32", "int8_static") and space.epochs == (1, 2)
    assert space.cheapest() == {"prune.channel_keep_ratio": 0.25, "train.epochs": 1, "prune.depth_keep_ratio": 0.5,
                                "input.resolution_px": 32, "quant.scheme": "int8_static"}
    assert SPEC.load_space("channels").resolution_px is None  # the channel knob alone


@pytest.mark.parametrize("edit, said", [
    (("[32, 64, 16]", "[32, 64, 20]"), r"vision.yaml: input.resolution_px: got \[32, 64, 20\]; give \[low, high, "
                                       r"step\], integers .* a whole number of steps"),
    (("[fp32, int8_static]", "[fp32, int4]"), r"vision.yaml: quant.schemes: got \['fp32', 'int4'\]; a list of "
                                              r"distinct schemes from \['fp32', 'int8_static'\]"),
    (("depth_keep_ratio:", "depth_keep:"), r"vision.yaml: prune.depth_keep: unknown key"),
])
def test_a_bad_space_file_is_one_line(tmp_path, edit, said):
    text = (Path(__file__).parent.parent / "spaces" / "vision.yaml").read_text()
    assert edit[0] in text
    (tmp_path / "vision.yaml").write_text(text.replace(edit[0], edit[1]))
    with pytest.raises(ConfigError, match=said):
        SPEC.load_space(str(tmp_path / "vision.yaml"))


def test_a_resolution_above_the_tasks_is_refused():
    task = SPEC.load_task("fashion_mnist")  # 64 px
    space = SPEC.load_space(None)
    bigger = type(space)(path=space.path, resolution_px=(32, 96, 32))
    with pytest.raises(ConfigError, match=r"input.resolution_px: up to 96 px, but the task fashion_mnist is at 64 "
                                          r"px; .* lower it"):
        SPEC.check(task, bigger, type("T", (), {"workload": SPEC.ImageWorkload(1)})())


def test_a_depth_cut_drops_the_least_important_residual_blocks():
    family = families.get("efficientnet_lite")
    model = _lite0()
    features = {"pixel_values": torch.randn(8, 3, 32, 32)}
    scores = family.block_importance(model, features)
    assert set(scores) == set(family.droppable_blocks(model))  # residual blocks only: never a stage's first
    cut = family.cut_depth(copy.deepcopy(model), 0.5, features)
    kept = family.kept_blocks(cut)
    assert [len(k) for k in kept] == [1, 1, 1, 2, 2, 2, 1]  # round(0.5 * [1, 2, 2, 3, 3, 4, 1]), at least 1
    for s, stage_kept in enumerate(kept):
        dropped = [(s, i) for i in range(len(model.blocks[s])) if i not in stage_kept]
        survivors = [(s, i) for i in stage_kept if i > 0]
        assert all(scores[d] <= scores[k] for d in dropped for k in survivors)  # the least important went
    # the shape lists exactly the surviving blocks' convolutions, and the parameters are theirs
    names = {name.rsplit(".", 1)[0] for name, *_ in family.shape_of(cut).layers if name.startswith("blocks.")}
    assert names == {f"blocks.{s}.{i}" for s, k in enumerate(kept) for i in k}
    gone = sum(p.numel() for s, stage in enumerate(model.blocks) for i, b in enumerate(stage) if i not in kept[s]
               for p in b.parameters())
    assert sum(p.numel() for p in cut.parameters()) == sum(p.numel() for p in model.parameters()) - gone
    assert cut(features["pixel_values"]).shape == (8, 10)


def test_a_student_at_a_lower_resolution_ships_at_its_size(tmp_path):
    family, backend = families.get("efficientnet_lite"), backends.get("onnxruntime")
    full, half = _lite0(32), family.at_resolution(_lite0(32), 16)
    dims = [d.dim_value for d in onnx.load(str(backend.build(half, SPEC_QUANT("fp32"), tmp_path / "h"))).graph
            .input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [3, 16, 16]
    assert family.activation_bytes(family.shape_of(half), 1) * 4 == family.activation_bytes(family.shape_of(full), 1)
    lat = backend.measure_latency(tmp_path / "h" / "model.onnx", family.shape_of(half), 1, 0, 1, rounds=2,
                                  runs_per_round=5)  # the probe feeds the student's size
    assert lat.p50_ms > 0
    saved = {"teacher_shape": _as_json(family.shape_of(full)), "batch_size": 1, "threads": 1}
    fresh, _, _ = backend.remeasure(tmp_path / "h" / "model.onnx", {**saved, "candidate_shape": _as_json(
        family.shape_of(half))}, None, 0.95)  # select's re-measure: the student's inputs, not the teacher's
    assert fresh["p50_latency_ms"] > 0


def test_static_int8_quantizes_every_convolution_per_channel(prepared, tmp_path):
    flow, target, ctx, _ = prepared
    family, backend, p = ctx.family, ctx.backend, ctx.prepared
    calibration, _ = p.train.batch(torch.arange(128))
    fp32 = backend.build(p.teacher, SPEC_QUANT("fp32"), tmp_path / "fp32")
    int8 = backend.build(p.teacher, SPEC_QUANT("int8_static"), tmp_path / "int8", calibration)
    graph = onnx.load(str(int8)).graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == sum(1 for name, *_ in family.shape_of(p.teacher).layers if name != "classifier")
    for conv in convs:
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == onnx.TensorProto.INT8
        out_channels = inits[dq.input[0]].dims[0]
        assert len(onnx.numpy_helper.to_array(inits[dq.input[1]])) == out_channels  # a scale per output channel
    # size: measured on the file, predicted within 1%
    shape = family.shape_of(p.teacher)
    measured = backend.weight_bytes(int8)
    assert measured < 0.3 * backend.weight_bytes(fp32)
    assert abs(backend.predicted_weight_bytes(shape, SPEC_QUANT("int8_static")) / measured - 1) < 0.01
    # accuracy: the quantized ONNX scored on the validation split, against the fp32 ONNX
    # Measured here: 0.55 fp32, 0.48 int8 on 100 images, top-1 agreement 0.54 (a teacher tuned 4 epochs on 240 images
    # at 32 px, logits' std ~1: small margins). Percentile or reduce-range calibration did no better (agreement
    # 0.63, 0.66): an open finding of issue 31, so the bound here is loose and the agreement only printed.
    labels = p.val.labels.numpy()
    top1 = {k: backend.outputs(a, p.val, 1).argmax(-1) for k, a in (("fp32", fp32), ("int8", int8))}
    acc = {k: float((v == labels).mean()) for k, v in top1.items()}
    agreement = float((top1["fp32"] == top1["int8"]).mean())
    print(f"accuracy {acc}, top-1 agreement {agreement:.2f}")
    assert acc["fp32"] > 0.3 and acc["int8"] >= acc["fp32"] - 0.10, (acc, agreement)


def test_a_candidate_with_every_knob_is_what_it_claims(prepared):
    flow, target, ctx, tmp = prepared
    recipe = SPEC.Recipe(channel_keep_ratio=0.5, epochs=1, depth_keep_ratio=0.5, resolution_px=16,
                         quant="int8_static")
    m = flow.run_candidate(ctx, recipe, tmp / "every", log=lambda s: None)
    assert m["shape"]["resolution_px"] == 16 and m["quant"] == "int8_static"
    assert [len(k) for k in m["kept_blocks"]] == [1, 1, 1, 2, 2, 2, 1]
    assert m["weight_mb"] * memory.MB == ctx.backend.weight_bytes(Path(m["artifact"]))
    predicted, _ = flow.screen(ctx, recipe)
    assert abs(predicted["predicted_memory_mb"] / (m["weight_mb"] + m["activation_mb_estimated"]) - 1) < 0.01
    assert 0 <= m["accuracy"] <= 1 and m["eval_examples"] == len(ctx.prepared.val)
    teacher = flow.measure_teacher(ctx, tmp / "teacher")
    assert m["weight_mb"] < teacher["weight_mb"] / 10  # every knob together: over 10x smaller


def SPEC_QUANT(name: str):
    from search.flows.image_classification.flow import QUANT

    return QUANT[name]


def _as_json(shape) -> dict:
    from dataclasses import asdict

    return asdict(shape)


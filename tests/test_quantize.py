"""The onnxruntime artifact: numerics agree with torch, 4-bit groups are real, bytes are predicted."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from conftest import calib
from search import families
from search.backends.onnxruntime import OnnxRuntime, session
from search.candidate import QuantParams
from search.train import outputs_of

ORT = OnnxRuntime()

ALL_QUANT = [QuantParams(32), QuantParams(8, None, "dynamic_int8"), QuantParams(8, 32), QuantParams(4, 32),
             QuantParams(4, 64), QuantParams(4, 128), QuantParams(2, 32), QuantParams(4, "channel"),
             QuantParams(4, 32, method="gptq"), QuantParams(4, 64, high_precision_fraction=0.34),
             QuantParams(8, None, "static_int8"), QuantParams(8, None, "static_int8", smooth_alpha=0.5)]


def _id(q):
    return f"{q.bits}-{q.group_size}-{q.activations}-{q.method}-{q.high_precision_fraction}"


def _calibration(split):
    return calib(split, 16)


def _onnx_logits(path, split):
    sess = session(path, 2)
    features, _ = split.batch(torch.arange(len(split)))
    return sess.run(["logits"], {name: t.numpy() for name, t in features.items()})[0]


def test_fp32_artifact_matches_torch(model, split, tmp_path):
    path = ORT.build(model, QuantParams(32), tmp_path)
    ref = outputs_of(model, split).numpy()
    assert np.abs(_onnx_logits(path, split) - ref).max() < 1e-4


@pytest.mark.parametrize("quant", ALL_QUANT[1:], ids=_id)
def test_quantized_artifact_stays_close(model, split, tmp_path, quant):
    path = ORT.build(model, quant, tmp_path, _calibration(split))
    ref = outputs_of(model, split).numpy()
    err = np.abs(_onnx_logits(path, split) - ref).max()
    assert 0 < err < 0.25 * np.abs(ref).max()  # changed (really quantized), but not broken


@pytest.mark.parametrize("group", [32, 64, 128])
def test_4bit_groups_have_at_most_16_levels_and_round_to_nearest(tmp_path, group):
    from conftest import tiny_model

    model = tiny_model(hidden=256, heads=8, ffn=512, layers=1)
    path = ORT.build(model, QuantParams(4, group), tmp_path)
    graph = onnx.load(str(path)).graph
    inits = {t.name: t for t in graph.initializer}
    node = next(n for n in graph.node if n.op_type == "MatMulNBits" and "layer.0/intermediate" in n.name)
    packed = numpy_helper.to_array(inits[node.input[1]])  # [N, blocks, group/2] uint8
    scales = numpy_helper.to_array(inits[node.input[2]]).reshape(packed.shape[0], packed.shape[1])
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["bits"] == 4 and attrs["block_size"] == group
    q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(packed.shape[0], packed.shape[1], group)
    dequant = (q.astype(np.float32) - 8) * scales[..., None]  # symmetric: zero point 8
    weight = model.bert.encoder.layer[0].intermediate.dense.weight.detach().numpy()  # [N, K]
    w = weight.reshape(weight.shape[0], -1, group)
    assert q.shape == w.shape
    for n in range(0, w.shape[0], 37):
        for b in range(w.shape[1]):
            assert len(np.unique(dequant[n, b])) <= 16
    # round-to-nearest: within half a step of the grid, except values clipped at the grid's ends
    err, step = np.abs(dequant - w), np.abs(scales[..., None])
    clipped = (q == 0) | (q == 15)
    assert (err[~clipped] <= step.repeat(group, -1)[~clipped] / 2 + 1e-6).all()
    assert (err <= step + 1e-6).all()


@pytest.mark.parametrize("quant", ALL_QUANT, ids=_id)
def test_predicted_weight_bytes_match_the_artifact(model, split, tmp_path, quant):
    path = ORT.build(model, quant, tmp_path, _calibration(split))
    measured = ORT.weight_bytes(path)
    predicted = ORT.predicted_weight_bytes(families.of(model).shape_of(model), quant)
    assert predicted == pytest.approx(measured, rel=0.03)


def test_4bit_bytes_count_packed_nibbles(model, tmp_path):
    path = ORT.build(model, QuantParams(4, 32), tmp_path)
    fp32 = ORT.build(model, QuantParams(32), tmp_path / "fp32")
    assert ORT.weight_bytes(path) < 0.25 * ORT.weight_bytes(fp32)


def test_structured_pruning_shrinks_onnx_weights(model, split, tmp_path):
    from search.compress import prune

    dense = ORT.weight_bytes(ORT.build(model, QuantParams(32), tmp_path / "dense"))
    prune.structured(model, 0.5, families.of(model).measure_importance(model, calib(split, 16)))
    pruned = ORT.weight_bytes(ORT.build(model, QuantParams(32), tmp_path / "pruned"))
    # embeddings stay; each layer's attention and FFN matrices halve
    layer_bytes = 4 * 3 * (4 * 128 * 128 + 2 * 128 * 256)
    assert dense - pruned == pytest.approx(layer_bytes / 2, rel=0.02)


@pytest.mark.parametrize("quant", ALL_QUANT, ids=_id)
def test_trimmed_vocabulary_quantizes_runs_and_is_predicted(model, split, tmp_path, quant):
    from search.compress import vocab

    vocab.trim(model, vocab.task_token_ids(split.features["input_ids"], [0, 1]), unk_id=1)
    path = ORT.build(model, quant, tmp_path, _calibration(split))
    ref = outputs_of(model, split).numpy()
    assert np.abs(_onnx_logits(path, split) - ref).max() < 0.25 * np.abs(ref).max()
    predicted = ORT.predicted_weight_bytes(families.of(model).shape_of(model), quant)
    assert predicted == pytest.approx(ORT.weight_bytes(path), rel=0.03)


def test_smoothquant_keeps_the_function_and_flattens_activation_outliers(model, split):
    import copy

    from search.compress import smooth

    with torch.no_grad():  # an outlier channel in the residual stream, like trained BERTs have
        model.bert.embeddings.LayerNorm.weight[7] = 40.0
    calib = _calibration(split)
    ref = outputs_of(model, split)
    smoothed = copy.deepcopy(model)
    before = smooth.input_absmax(model, calib)
    assert smooth.smooth(smoothed, 0.5, calib) == 3 * 6
    torch.testing.assert_close(outputs_of(smoothed, split), ref, rtol=1e-4, atol=1e-4)
    query = smoothed.bert.encoder.layer[0].attention.self.query
    assert isinstance(query, smooth.Smoothed)
    x = before[model.bert.encoder.layer[0].attention.self.query]
    spread = lambda v: (v.max() / v.median()).item()  # noqa: E731
    assert spread(x * query.inv_scale) < 0.5 * spread(x)  # what static int8 must cover is flatter


def test_static_int8_quantizes_activations_with_calibrated_ranges(model, split, tmp_path):
    path = ORT.build(model, QuantParams(8, None, "static_int8"), tmp_path, _calibration(split))
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("QuantizeLinear") >= 3 * 6  # every encoder MatMul's input, not only its weights
    with pytest.raises(Exception, match="calibration"):
        ORT.build(model, QuantParams(8, None, "static_int8"), tmp_path / "x")

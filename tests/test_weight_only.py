"""Weight-only codes: ORT's layout byte for byte, GPTQ beats round-to-nearest, mixed precision follows
measured sensitivity, and the torch model computes what the shipped artifact computes."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from conftest import calib as calibration, nbits_by_layer
from search import families
from search.backends.onnxruntime import OnnxRuntime, layout, session
from search.candidate import QuantParams
from search.compress import gptq, grid, weight_only
from search.errors import CandidateError
from search.train import outputs_of

ORT = OnnxRuntime()


def _onnx_logits(path, split):
    features, _ = split.batch(torch.arange(len(split)))
    return session(path, 2).run(["logits"], {name: t.numpy() for name, t in features.items()})[0]


def _matmul_model(w_kn: np.ndarray) -> onnx.ModelProto:
    k, n = w_kn.shape
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
                              [numpy_helper.from_array(w_kn, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("bits,group", [(2, 32), (4, 32), (4, 64), (8, 16), (4, "channel")])
def test_rtn_codes_are_byte_identical_to_onnxruntimes_quantizer(bits, group):
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    w = torch.randn(48, 96)  # torch layout [N, K]
    block = grid.block_size_for(96, group)
    assert block == (128 if group == "channel" else group)
    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, bits=bits)
    q = MatMulNBitsQuantizer(_matmul_model(w.t().contiguous().numpy()), algo_config=config)
    q.process()
    inits = {t.name: numpy_helper.to_array(t) for t in q.model.model.graph.initializer}
    ours = grid.rtn(w, bits, block)
    assert np.array_equal(layout.pack(ours.codes, bits), inits[f"W_Q{bits}"])
    assert np.array_equal(ours.scales.numpy().reshape(-1), inits["W_scales"].reshape(-1))
    assert np.array_equal(layout.unpack(layout.pack(ours.codes, bits), bits), ours.codes.numpy())


def test_rewritten_matmul_computes_the_dequantized_weight():
    w = torch.randn(40, 64)
    codes = grid.rtn(w, 4, 32)
    model = _matmul_model(w.t().contiguous().numpy())
    assert layout.rewrite(model, {layout.key_of_linear(w): codes}, accuracy_level=0) == 1
    assert [n.op_type for n in model.graph.node] == ["MatMulNBits"] and len(model.graph.initializer) == 2
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x @ codes.dequantize().numpy().T, atol=1e-4)


def test_codes_stay_on_the_grid_and_padding_is_not_in_the_weight():
    w = torch.randn(8, 40)
    for bits in (2, 4, 8):
        c = grid.rtn(w, bits, 32)
        assert c.codes.shape == (8, 2, 32) and int(c.codes.max()) < 2 ** bits
        assert (c.codes[:, 1, 8:] == 0).all()  # K=40: the last block's 24 padded codes, as ORT writes them
        assert c.dequantize().shape == (8, 40)
        per_block = c.dequantize().reshape(8, -1)[:, :32]
        assert all(len(torch.unique(row)) <= 2 ** bits for row in per_block)


def test_2bit_per_channel_over_256_inputs_is_refused(split, tmp_path):
    """onnxruntime refuses 2-bit blocks over 256 at session start: the backend refuses them first (the grid
    maths itself has no such limit)."""
    from conftest import tiny_model

    block = grid.block_size_for(384, "channel")
    with pytest.raises(CandidateError, match="256"):
        layout.check_block(2, block)
    layout.check_block(4, block)  # only 2 bits are limited
    layout.check_block(2, grid.block_size_for(256, "channel"))
    assert grid.rtn(torch.randn(4, 384), 2, block).codes.shape == (4, 1, 512)  # rounding itself still works

    model = tiny_model(ffn=384)  # the FFN output Linear has 384 inputs
    shape = families.of(model).shape_of(model)
    params = QuantParams(2, "channel")
    problems = ORT.check(shape, params)
    assert len(problems) == 1 and "256" in problems[0]
    assert ORT.check(shape, QuantParams(2, 32)) == [] and ORT.check(shape, QuantParams(4, "channel")) == []
    with pytest.raises(CandidateError, match="256"):
        ORT.build(model, params, tmp_path, calibration(split, 16))


@pytest.mark.parametrize("bits,group", [(4, 32), (2, 32), (4, "channel")])
def test_gptq_has_lower_output_error_than_rtn_on_correlated_inputs(bits, group):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 16, generator=g) @ torch.randn(16, 128, generator=g)  # low-rank: strongly correlated
    x += 0.1 * torch.randn(2048, 128, generator=g)
    w = torch.randn(64, 128, generator=g)
    h, _ = gptq.hessian_update(None, 0, x)
    block = grid.block_size_for(128, group)
    err = {name: float(((x @ (w - c.dequantize()).T) ** 2).mean())
           for name, c in (("rtn", grid.rtn(w, bits, block)), ("gptq", gptq.gptq(w, h, bits, block)))}
    assert err["gptq"] < 0.5 * err["rtn"], err
    c = gptq.gptq(w, h, bits, block)
    assert int(c.codes.max()) < 2 ** bits and c.codes.shape == (64, 128 // block, block)


def test_hessian_update_is_the_running_mean_of_2xxT():
    x = torch.randn(100, 8)
    h, n = gptq.hessian_update(None, 0, x[:30])
    h, n = gptq.hessian_update(h, n, x[30:])
    assert n == 100
    torch.testing.assert_close(h, 2 * x.t() @ x / 100, rtol=1e-5, atol=1e-5)


def test_mixed_precision_keeps_the_most_sensitive_layers_at_8_bits(model, split, tmp_path):
    calib = calibration(split, 16)
    with torch.no_grad():  # make layer 1 clearly the most sensitive: large weights, large rounding error
        for lin in weight_only.layer_linears(families.of(model).blocks(model)[1]):
            lin.weight.mul_(6.0)
    scores = weight_only.layer_sensitivity(model, 2, 32, calib)
    assert int(np.argmax(scores)) == 1
    params = QuantParams(2, 32, high_precision_fraction=0.34)  # round(0.34 * 3 layers) = 1 layer at 8 bits
    assert weight_only.bits_per_layer(model, params, calib) == [2, 8, 2]
    path = ORT.build(model, params, tmp_path, calib)
    assert nbits_by_layer(path) == {0: {2}, 1: {8}, 2: {2}}


@pytest.mark.parametrize("bits,method", [(8, "rtn"), (8, "gptq"), (4, "rtn"), (4, "gptq"), (2, "gptq")])
def test_torch_and_the_onnxruntime_artifact_compute_the_same_quantized_model(model, split, tmp_path, bits, method):
    """Linears and (at <= 4 bits) embeddings are rounded in torch exactly as shipped: the only difference
    left is the kernel's int8 activations (accuracy_level 4)."""
    calib = calibration(split, 16)
    params = QuantParams(bits, 32, method=method)
    fake = copy.deepcopy(model)
    weight_only.quantize_linears(fake, params, calib)
    path = ORT.build(model, params, tmp_path, calib)
    ort_logits = _onnx_logits(path, split)
    torch_logits = outputs_of(fake, split).numpy()
    fp32_logits = outputs_of(model, split).numpy()
    assert np.abs(ort_logits - torch_logits).max() < 2e-3
    assert np.abs(torch_logits - fp32_logits).max() > 0  # the weights really changed


def test_quantization_aware_recovery_trains_on_the_grid_the_artifact_ships(model, split, tmp_path):
    from search.compress import prune, qat
    from search.candidate import PruneParams
    from search.train import KD

    calib = calibration(split, 16)
    kd = KD(outputs_of(model, split), 2.0, 0.5)
    prune.apply(model, PruneParams("unstructured", 0.5), train_split=split, kd=kd, calibration=calib)
    before = [lin.weight.detach().clone() for lin in families.of(model).linears(model)]
    params = QuantParams(8, 32, qat_steps=5)
    linears = qat.attach(model, params, calib)
    fake_logits = outputs_of(model, split).numpy()  # what training computes with
    qat.detach(linears)
    path = ORT.build(model, params, tmp_path, calib)
    ort_logits = _onnx_logits(path, split)
    assert np.abs(ort_logits - fake_logits).max() < 2e-3

    qat.apply(model, params, train_split=split, kd=kd, calibration=calib)
    after = [lin.weight.detach() for lin in families.of(model).linears(model)]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))  # the latent weights trained
    assert all(torch.equal(a == 0, b == 0) for a, b in zip(after, before))  # pruned zeros stayed zero
    assert not any(hasattr(lin, "parametrizations") for lin in families.of(model).linears(model))
    with pytest.raises(CandidateError, match="round-to-nearest"):
        qat.apply(model, QuantParams(4, 32, method="gptq", qat_steps=3), train_split=split, kd=kd, calibration=calib)


def test_quantization_aware_recovery_and_gptq_work_on_a_trimmed_vocabulary(model, split, tmp_path):
    from search.compress import qat, vocab
    from search.train import KD

    vocab.trim(model, vocab.task_token_ids(split.features["input_ids"], [0, 1]), unk_id=1)
    calib = calibration(split, 16)
    params = QuantParams(4, 32, qat_steps=2)
    qat.apply(model, params, train_split=split, kd=KD(outputs_of(model, split), 2.0, 0.5), calibration=calib)
    assert not hasattr(model.bert.embeddings.word_embeddings.embedding, "parametrizations")
    for p in (params, QuantParams(4, 32, method="gptq")):
        fake = copy.deepcopy(model)
        weight_only.quantize_linears(fake, p, calib)
        path = ORT.build(model, p, tmp_path / p.method, calib)
        got = _onnx_logits(path, split)
        assert np.abs(got - outputs_of(fake, split).numpy()).max() < 2e-3

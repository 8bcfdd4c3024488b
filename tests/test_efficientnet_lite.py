"""The image teacher (issue 31): EfficientNet-Lite0's ImageNet weights from the registry's `.pth`, read as tensors only,
renamed onto timm's model and cached as safetensors; the mapped model computes what the reference implementation
computes. A `.pth` that holds code, is truncated or is no state dict is one line."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict

import pytest
import torch

from search import families
from search.errors import ConfigError
from search.families import efficientnet_lite as lite

pytestmark = pytest.mark.skipif(importlib.util.find_spec("timm") is None
                                or importlib.util.find_spec(lite.WEIGHTS_PACKAGE) is None,
                                reason="timm or the Lite0 weights package not installed (make setup)")
TOLERANCE = 1e-5  # absolute, on ImageNet class scores of magnitude up to ~10; measured: 0.0 (the same arithmetic)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return lite.imagenet_model(cache), cache


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite_pytorch") is None, reason="reference not installed")
def test_the_mapped_timm_model_computes_what_the_reference_implementation_computes(teacher):
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(1)
    model, _ = teacher
    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(lite.packaged_weights(), weights_only=True))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))  # the reference's own resolution
    with torch.no_grad():
        ours, theirs = model(x), reference.eval()(x)
    assert ours.shape == (2, lite.IMAGENET_CLASSES)
    assert (ours - theirs).abs().max().item() <= TOLERANCE
    assert theirs.abs().max().item() > 1  # not two zero outputs agreeing


def test_the_mapped_weights_are_cached_as_safetensors_and_read_back_without_the_pickle(teacher, monkeypatch):
    model, cache = teacher
    [cached] = cache.glob("pretrained-tf_efficientnet_lite0-*.safetensors")
    monkeypatch.setattr(lite, "read_tensors", lambda *a: pytest.fail("the .pth was read again"))
    again = lite.imagenet_model(cache)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert families.of(again).name == "efficientnet_lite"


class Code:  # pickled by reference: loading it would import and run this module
    pass


def test_a_pth_that_holds_code_is_refused_in_one_line_and_never_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(2), "payload": Code()}, path)
    with pytest.raises(ConfigError, match=r"task.yaml: teacher: .*evil.pth holds code, not only tensors") as err:
        lite.read_tensors(path, "task.yaml", "teacher")
    assert "\n" not in str(err.value) and "state dict of tensors" in str(err.value)  # the fix


@pytest.mark.parametrize("content, said", [(b"", "not a readable .pth"), ("truncated", "not a readable .pth"),
                                           ([torch.zeros(1)], "holds a list, not a state dict")])
def test_a_damaged_or_wrong_pth_is_one_line(tmp_path, content, said):
    path = tmp_path / "w.pth"
    if content == "truncated":
        torch.save({"w": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ConfigError, match=said) as err:
        lite.read_tensors(path, "task.yaml", "teacher")
    assert "\n" not in str(err.value)


def test_weights_of_another_network_do_not_map(teacher):
    model, _ = teacher
    state = torch.load(lite.packaged_weights(), weights_only=True)
    state.pop("_blocks.3._bn0.num_batches_tracked")
    with pytest.raises(ConfigError, match="do not match tf_efficientnet_lite0"):
        lite.map_names(state, model, "task.yaml", "teacher")
    state = torch.load(lite.packaged_weights(), weights_only=True)
    state["_fc.weight"] = torch.zeros(10, 1280)
    with pytest.raises(ConfigError, match=r"_fc.weight \(10, 1280\) does not fit"):
        lite.map_names(state, model, "task.yaml", "teacher")


def test_the_shape_prices_every_weight_and_the_convolutions(teacher):
    model, _ = teacher
    family = families.get("efficientnet_lite")
    shape = family.shape_of(model, resolution_px=224)
    weights = sum(p.numel() for p in model.parameters() if p.dim() > 1)
    assert sum(t.elements for t in family.tensors(shape) if t.role != "vector") == weights == 4_608_992
    # 385M multiply-adds at 224x224 (convolutions and the classifier; published: ~0.4 GMACs)
    assert sum(op.flops for op in family.operators(shape, batch=1)) == 770_375_104
    at_64 = family.shape_of(model, resolution_px=64)
    assert sum(op.flops for op in family.operators(at_64, batch=1)) < 0.1 * 770_375_104  # ~ pixels (64/224)^2
    spec = family.export_spec(at_64)
    assert spec.example[spec.inputs[0]].shape == (1, 3, 64, 64)
    assert lite.ConvShape.from_json(json.loads(json.dumps(asdict(shape)))) == shape  # as a run folder keeps it

"""The onnxruntime backend takes the family's input spec (issue 31): an image classifier's [batch, 3, H, W] float32
input is exported, scored and timed by the same code that exports and times the text families' token ids."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from search import backends, families
from search.candidate import QuantParams
from search.families.base import BATCH, SEQUENCE, InputSpec

pytestmark = pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm not installed (make setup)")
ORT = backends.get("onnxruntime")
RESOLUTION_PX = 32


@pytest.fixture(scope="module")
def image_model():
    """EfficientNet-Lite0 with random weights and a 4-way head at 32 px (speed and export do not need the
    ImageNet weights)."""
    from search.families.efficientnet_lite import ARCHITECTURE, EfficientNetLite
    from search.torchvision_cpu import import_timm

    torch.manual_seed(0)
    model = import_timm().create_model(ARCHITECTURE, pretrained=False, num_classes=4).eval()
    return EfficientNetLite.at_resolution(model, RESOLUTION_PX)


def test_input_specs_resolve_the_workload_dims():
    ids = InputSpec("ids", (BATCH, SEQUENCE), "int64", "ids", high=99)
    pixels = InputSpec("pixels", (BATCH, 3, 64, 64), "float32", "normal")
    assert ids.as_json(2, 16) == ["ids", "ids", 99, [2, 16], "int64"]
    assert pixels.as_json(8, 0) == ["pixels", "normal", 0, [8, 3, 64, 64], "float32"]


def test_an_image_model_is_exported_scored_and_timed_by_the_onnxruntime_backend(image_model, tmp_path):
    from search.flows.image_classification.data import ImageSplit, Preprocessing

    family = families.of(image_model)
    shape = family.shape_of(image_model)
    assert family.name == "efficientnet_lite" and shape.resolution_px == RESOLUTION_PX
    artifact = ORT.build(image_model, QuantParams(), tmp_path / "fp32")
    import onnx

    graph = onnx.load(str(artifact)).graph
    [image_input] = graph.input
    dims = [d.dim_param or d.dim_value for d in image_input.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, RESOLUTION_PX, RESOLUTION_PX]
    assert image_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # the artifact computes what the torch model computes, on a split of images through the backend's `outputs`
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (5, 1, RESOLUTION_PX, RESOLUTION_PX), generator=g, dtype=torch.uint8)
    split = ImageSplit(images, torch.zeros(5, dtype=torch.long), Preprocessing(None, (0.5,) * 3, (0.5,) * 3),
                       family.export_spec(shape).inputs[0])
    scores = ORT.outputs(artifact, split, threads=1, batch_size=2)
    with torch.no_grad():
        expected = image_model(split.batch(torch.arange(5))[0][split.input_name]).numpy()
    assert scores.shape == (5, 4) and np.allclose(scores, expected, atol=1e-4)
    # timed in a fresh process by the same probe as the text families, at the workload's batch
    lat = ORT.measure_latency(artifact, shape, batch=2, seq=0, threads=1, rounds=2, runs_per_round=5)
    assert lat.source == "measured" and 0 < lat.p50_ms <= lat.p99_ms and lat.peak_rss_mb > 0
    # a run folder's budget.json keeps the teacher's shape; remeasure reads it back for this family too
    saved = {"teacher_shape": json.loads(json.dumps(asdict(shape))), "batch_size": 1,
             "threads": 1}
    metrics, _, how = ORT.remeasure(artifact, saved, None, 0.95)
    assert metrics["p50_latency_ms"] > 0 and "1 thread(s)" in how

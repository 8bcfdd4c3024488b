"""The shipped vision targets (issue 31): read as image targets by their workload (batch_size, image_size_px) with no
--task, each budget one the fp32 teacher misses (priced the way the run prices it), and the one lines for a target
of the other kind or of another image size."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from search import backends, families, flows
from search.candidate import QuantParams
from search.errors import ConfigError
from search.measure import memory, roofline
from search.target import load_target

VISION = ("local_cpu_vision", "jetson_orin_vision", "raspberry_pi5_vision")


@pytest.mark.parametrize("name", VISION)
def test_vision_targets_are_read_as_image_targets(name):
    target = load_target(name)  # no kind asked: the workload's keys say it
    assert target.kind == "image_classification"
    assert target.workload.batch_size == 1 and target.workload.image_size_px == 64
    assert target.budget.accuracy_floor.max_drop == 0.01


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm not installed (make setup)")
@pytest.mark.parametrize("name", ("jetson_orin_vision", "raspberry_pi5_vision"))
def test_the_fp32_teacher_misses_each_estimated_vision_budget(name):
    """What the target files say, re-priced by today's code: weights + feature maps, and the roofline's p99."""
    from search.families.efficientnet_lite import ARCHITECTURE, EfficientNetLite
    from search.torchvision_cpu import import_timm

    target = load_target(name)
    family = families.get("efficientnet_lite")
    model = EfficientNetLite.at_resolution(import_timm().create_model(ARCHITECTURE, num_classes=10), 64)
    shape = family.shape_of(model)
    memory_mb = (backends.get("onnxruntime").predicted_weight_bytes(shape, QuantParams())
                 + family.activation_bytes(shape, 1)) / memory.MB
    assert memory_mb > 4 * target.budget.memory_mb  # 13.9 MB against 3 MB
    int8 = QuantParams(bits=8, activations="static_int8")  # the static int8 teacher misses it too
    assert (backends.get("onnxruntime").predicted_weight_bytes(shape, int8)
            + family.activation_bytes(shape, 1)) / memory.MB > target.budget.memory_mb
    p99_ms = roofline.estimate(shape, QuantParams(), target.device, 1, 0).p99_ms
    assert p99_ms > target.budget.p99_latency_ms


def test_a_target_of_the_other_kind_is_one_line():
    with pytest.raises(ConfigError, match=r"local_cpu.yaml: workload: its workload \(a classification target\), but "
                                          r"--task fashion_mnist is an image classification task; .* --target "
                                          r"local_cpu_vision"):
        load_target("local_cpu", kind="image_classification", asked_by="--task fashion_mnist")
    with pytest.raises(ConfigError, match=r"local_cpu_vision.yaml: workload: its workload \(an image classification "
                                          r"target\), but the task is a classification task"):
        load_target("local_cpu_vision", kind="classification")


def test_an_image_task_at_another_size_than_the_target_is_one_line(tmp_path):
    spec = flows.inputs("image_classification")
    task = spec.load_task("fashion_mnist")
    target = SimpleNamespace(path="t.yaml", workload=spec.ImageWorkload(batch_size=1, image_size_px=96))
    if not Path("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist not installed (make setup)")
    with pytest.raises(ConfigError, match=r"t.yaml: workload.image_size_px: 96, but the task fashion_mnist gives "
                                          r"64x64 images; give a target at that size"):
        spec.check(task, spec.load_space(None), target)
    spec.check(task, spec.load_space(None), SimpleNamespace(path="t.yaml", workload=spec.ImageWorkload(1, 64)))

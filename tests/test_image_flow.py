"""The image-classification kind end to end through the run engine (issue 31, groundwork): the EfficientNet-Lite0
teacher fine-tuned on a small Fashion-MNIST subset (cached), students cut to a share of their channels by
torch-pruning's dependency graph, recovered by distillation, exported to ONNX and measured by onnxruntime; the run
folder written and `select` run again on it. Tiny settings: 32 px, 240 training and 100 validation images,
the teacher fine-tuned for 4 epochs (~10 s)."""
from __future__ import annotations

import copy
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from search import families, flows, outputs, study
from search.errors import ConfigError
from search.run_dir import RunDir
from search.target import load_target

pytestmark = pytest.mark.skipif(importlib.util.find_spec("timm") is None or not Path(
    "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(),
    reason="timm or dataset-fashion-mnist not installed (make setup)")
TARGET = """name: this_cpu_images
device:
  latency: measured
  runtime: onnxruntime
  memory_mb: 24000
  threads: 1
  memory_bandwidth_gbps: 20
  peak_tops: {fp32: 0.1}
workload: {batch_size: 1}
budget:
  memory_mb: %s
  p99_latency_ms: 1000
  accuracy_floor: {absolute: 0.0}  # the machinery, not the quality: tiny data, one or two epochs of recovery
"""


def _inputs(tmp_path, memory_mb: float = 1000):
    torch.set_num_threads(1)
    spec = flows.inputs("image_classification")
    (tmp_path / "t.yaml").write_text(TARGET % memory_mb)
    target = load_target(str(tmp_path / "t.yaml"), kind="image_classification")
    task = replace(spec.load_task("fashion_mnist"), resolution_px=32, train_examples=240, validation_examples=100,
                   finetune_epochs=4)
    space = spec.load_space("channels")  # the channel knob alone (the other knobs: test_image_knobs.py)
    flow = flows.get("image_classification")
    prepared = flow.prepare(task, tmp_path / "cache", lambda s: None, spec.check(task, space, target))
    return flow, target, space, prepared


def test_channel_cuts_follow_the_dependency_graph():
    from search.families.efficientnet_lite import ARCHITECTURE, EfficientNetLite
    from search.torchvision_cpu import import_timm

    torch.manual_seed(0)
    model = EfficientNetLite.at_resolution(import_timm().create_model(ARCHITECTURE, num_classes=10).eval(), 32)
    family = families.of(model)
    cut = family.cut_channels(copy.deepcopy(model), 0.5)
    before, after = family.shape_of(model), family.shape_of(cut)
    assert after.classes == 10 and cut(torch.randn(2, 3, 32, 32)).shape == (2, 10)  # runs, the classes kept
    assert sum(p.numel() for p in cut.parameters()) < 0.4 * sum(p.numel() for p in model.parameters())
    for (name, cin, cout, k, stride, groups), (_, cin0, cout0, *_r) in zip(after.layers, before.layers):
        if groups > 1:  # a depthwise conv keeps one group per channel: in = out = groups
            assert cin == cout == groups
        assert cout % 8 == 0 or name == "classifier"  # rounded to what vector units like
    # the residual adds of a stage stay coupled: every block of stage 2 puts out the same width
    stage_outputs = {cout for name, _, cout, *_r in after.layers if name.startswith("blocks.2.") and
                     name.endswith("conv_pwl")}
    assert len(stage_outputs) == 1


@pytest.mark.slow  # ~30 s: with the slow checks (.ci/run), keeping make test under 10 min
def test_an_image_run_goes_end_to_end_through_the_engine(tmp_path):
    flow, target, space, prepared = _inputs(tmp_path)
    assert prepared.teacher_outputs.shape == (240, 10) and len(prepared.val) == 100
    assert any((tmp_path / "cache").glob("teacher-*/model.safetensors"))  # fine-tuned once, cached
    run = tmp_path / "results" / "img"
    run.mkdir(parents=True)
    lines = []
    selected = study.run(flow, target, space, prepared, run, study.RunSettings(trials=2, timeout_s=None, seed=0,
                                                                               threads=1), resume=False,
                         log=lines.append)
    rd = RunDir(run)
    for path in (rd.trials_csv, rd.pareto_csv, rd.selected_json, rd.teacher_json, rd.model_dir / "model.onnx"):
        assert path.is_file(), path
    trials = pd.read_csv(rd.trials_csv)
    done = trials[trials.state == "COMPLETE"]
    assert len(done) == 2 and trials.label.iloc[0] == "keep0.25 e1"  # the warm start first
    assert (done.latency_source == "measured").all() and (done.p50_latency_ms > 0).all()
    teacher = json.loads(rd.teacher_json.read_text())
    assert teacher["accuracy"] > 0.3 and teacher["latency_source"] == "measured"  # learnt (chance: 0.1), measured
    assert done.accuracy.between(0, 1).all() and (done.weight_mb < teacher["weight_mb"]).all()  # cut students
    assert selected["budget"]["flow"] == "image_classification" and selected["meets_budget"]
    assert selected["bounds"]["p99_latency_ms"]["meets"]  # re-measured (more runs) in a fresh process before shipping
    again = outputs.finish(outputs.load_study(run), rd, policy="memory", log=lambda s: None)
    assert again["policy"] == "memory"
    # the same task again: the teacher comes from the cache, not a second fine-tune
    said = []
    flow.prepare(prepared.task, tmp_path / "cache", said.append, "fashion_mnist")
    assert any("teacher loaded from cache" in s for s in said)
    # a damaged cache is said and fine-tuned again, not a traceback
    [weights] = (tmp_path / "cache").glob("teacher-*/model.safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])
    said = []
    again = flow.prepare(prepared.task, tmp_path / "cache", said.append, "fashion_mnist")
    assert any("teacher cache unreadable" in s for s in said) and again.teacher_outputs.shape == (240, 10)


def test_a_budget_no_student_meets_is_refused_before_training(tmp_path):
    flow, target, space, prepared = _inputs(tmp_path, memory_mb=0.5)
    with pytest.raises(ConfigError, match="budget.memory_mb: 0.5 MB, but the narrowest student needs"):
        flow.prepare_run(prepared, target, space, tmp_path / "cache", 1, 0)


class Code:  # pickled by reference: loading it would run code
    pass


@pytest.mark.parametrize("case, said", [
    ("empty class folder", r"data.path: class folder \S*bird is empty"),
    ("truncated image", r"data.path: \S*bad.png is damaged or truncated"),
    ("mixed sizes", r"preprocessing.resize: images differ: .* name `preprocessing: \{resize"),
    ("code in the teacher file", r"teacher: \S*weights.pth holds code, not only tensors"),
])
def test_bad_image_inputs_are_one_line_and_exit_2_on_the_command_line(tmp_path, case, said):
    """A user's image task through `python -m search run` in a fresh process: refused before a run folder exists."""
    import os
    import re
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    for c in ("cat", "dog"):
        for i in range(3):
            (tmp_path / "imgs" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    task = "task_type: image_classification\ndata: {path: imgs}\n"
    if case == "empty class folder":
        (tmp_path / "imgs" / "bird").mkdir()
    elif case == "truncated image":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / "b.png")
        (tmp_path / "imgs" / "dog" / "bad.png").write_bytes((tmp_path / "b.png").read_bytes()[:2000])
    elif case == "mixed sizes":
        Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(tmp_path / "imgs" / "dog" / "tall.png")
    else:
        torch.save({"w": torch.zeros(1), "payload": Code()}, tmp_path / "weights.pth")
        task += "teacher: weights.pth\n"
    (tmp_path / "task.yaml").write_text(task)
    (tmp_path / "t.yaml").write_text(TARGET % 1000)
    env = {**os.environ, "SEARCH_RESULTS_DIR": str(tmp_path / "results"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "search", "run", "--task", str(tmp_path / "task.yaml"), "--target",
                           str(tmp_path / "t.yaml"), "--trials", "1", "--threads", "1"], capture_output=True,
                          text=True, env=env, cwd=Path(__file__).parent.parent, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and re.search(said, proc.stderr), proc.stderr
    assert f"{tmp_path / 'task.yaml'}: " in proc.stderr  # names the task file
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())  # no run folder

"""A task kind that is not a transformer runs end to end through the core (issue 30): a small convolutional image
classifier as its own flow folder (tests/toy_conv: flow.py, inputs.py) and one registration line; nothing in
`search/` is edited for it or names it. The engine warm-starts, screens, builds, measures, selects and writes the run
folder; `select` works on it again; a budget no student can meet is refused before any training."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from search import flows, outputs, study
from search.errors import ConfigError
from search.run_dir import RunDir
from search.target import load_target

PACKAGE = Path(__file__).resolve().parent.parent / "search"
TARGET = """name: toy_device
device:
  latency: estimated
  runtime: onnxruntime
  memory_mb: 100
  memory_bandwidth_gbps: 10
  peak_tops: {fp32: 0.001}
workload: {batch_size: 4}
budget:
  memory_mb: %s
  p99_latency_ms: 50
  accuracy_floor: {max_drop: %s}
"""


@pytest.fixture
def registered(monkeypatch):
    """The registry as it was after the test (the toy kind is this module's alone): its flow module is imported
    afresh by each test, so it registers itself each time."""
    import sys

    monkeypatch.setattr(flows, "_MODULES", dict(flows._MODULES))
    flows.add("toy_conv", "toy_conv")  # the one registration line: the kind's folder, by its import name
    yield
    flows._REGISTRY.pop("toy_conv", None)
    for name in [m for m in sys.modules if m == "toy_conv" or m.startswith("toy_conv.")]:
        del sys.modules[name]


def _inputs(tmp_path, memory_mb: float):
    spec = flows.inputs("toy_conv")
    # a floor the narrowest students reach however this machine's float kernels train them (the teacher: ~0.95)
    (tmp_path / "toy.yaml").write_text(TARGET % (memory_mb, 0.6))
    target = load_target(str(tmp_path / "toy.yaml"), kind="toy_conv")
    task, space = spec.load_task("strokes"), spec.load_space(None)
    flow = flows.get("toy_conv")
    prepared = flow.prepare(task, tmp_path / "cache", lambda s: None, spec.check(task, space, target))
    return flow, target, space, prepared


def test_a_convolutional_kind_runs_end_to_end_through_the_core(tmp_path, registered):
    flow, target, space, prepared = _inputs(tmp_path, memory_mb=0.012)  # students of up to 8 channels fit
    assert target.kind == "toy_conv" and target.workload.batch_size == 4  # its own workload schema
    run = tmp_path / "results" / "toy"
    run.mkdir(parents=True)
    lines = []
    settings = study.RunSettings(trials=4, timeout_s=None, seed=0, threads=1)
    selected = study.run(flow, target, space, prepared, run, settings, resume=False, log=lines.append)
    rd = RunDir(run)
    for path in (rd.study_db, rd.trials_csv, rd.pareto_csv, rd.selected_json, rd.dashboard, rd.teacher_json,
                 rd.model_dir / "model.onnx", rd.model_dir / "recipe.json"):
        assert path.is_file(), path
    trials = pd.read_csv(rd.trials_csv)
    done = trials[trials.state == "COMPLETE"]
    assert len(done) == 4 and done.label.str.startswith("conv").all()
    assert trials.label.iloc[0] == "conv2 e3"  # the flow's warm start came first
    # the screen kept students wider than the budget from training (their predicted misses go to the sampler)
    pruned = trials[trials.state == "PRUNED"]
    assert pruned.reason.str.startswith("rejected before training: predicted memory").all()
    assert len(pruned) > 0 and (done.memory_mb <= 0.012).all()
    assert selected["budget"]["flow"] == "toy_conv" and selected["budget"]["memory_mb"] == 0.012
    assert set(selected["metrics"]) == set(flow.SUMMARY_KEYS)
    teacher = json.loads(rd.teacher_json.read_text())
    assert teacher["accuracy"] > 0.6  # the toy task is learnt (4 classes: chance is 0.25)
    assert any("acc " in line and "mem " in line for line in lines)  # the flow's own log line
    assert selected["meets_budget"]  # within every budget, and vouched for by its accuracy bound
    assert selected["metrics"]["memory_mb"] <= 0.012 and selected["bounds"]["accuracy"]["meets"]
    # the core's `select` on the finished run, with another policy
    again = outputs.finish(outputs.load_study(run), rd, policy="memory", log=lambda s: None)
    assert again["policy"] == "memory" and again["budget"] == selected["budget"]


def test_a_budget_no_student_meets_is_refused_before_training(tmp_path, registered):
    flow, target, space, prepared = _inputs(tmp_path, memory_mb=0.001)
    with pytest.raises(ConfigError, match="budget.memory_mb: 0.001 MB, but the smallest student needs"):
        flow.prepare_run(prepared, target, space, tmp_path / "cache", 1, 0)


def test_the_command_line_runs_selects_and_exports_a_kind_named_by_the_environment(tmp_path):
    """The same kind through `python -m search` in fresh processes: SEARCH_FLOWS names its package; run, export
    (the exact ONNX file and a deploy card), and replan refused in one line (the toy kind does not re-price)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "SEARCH_RESULTS_DIR": str(tmp_path / "results"), "SEARCH_FLOWS": "toy_conv=toy_conv",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    cli = lambda *a: subprocess.run([sys.executable, "-m", "search", *a], capture_output=True, text=True,  # noqa
                                    cwd=PACKAGE.parent, env=env, timeout=600)
    (tmp_path / "toy.yaml").write_text(TARGET % (0.012, 0.6))  # a floor the warm start's student meets
    proc = cli("run", "--task", "strokes", "--target", str(tmp_path / "toy.yaml"), "--trials", "2", "--threads", "1",
               "--run-id", "toy")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = tmp_path / "results" / "toy"
    assert json.loads((run / "run.json").read_text())["task"] == "strokes"
    assert json.loads((run / "selected.json").read_text())["budget"]["flow"] == "toy_conv"
    proc = cli("export", "toy", "--out", str(tmp_path / "ship"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = (tmp_path / "ship" / "DEPLOY.md").read_text()
    assert (tmp_path / "ship" / "model.onnx").is_file() and "onnxruntime" in card and "horizontal" in card
    proc = cli("replan", "toy", "--target", str(tmp_path / "toy.yaml"))
    assert proc.returncode == 2 and "cannot be replanned" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_nothing_in_the_package_names_the_toy_kind():
    assert not [p for p in PACKAGE.rglob("*.py") if "toy_conv" in p.read_text() or "strokes" in p.read_text()]

"""`python -m search replan`: one finished tiny search answers other targets and budgets without training."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from conftest import TINY_DISTILL, write_tiny_task

ROOT = Path(__file__).resolve().parent.parent
SPACE = TINY_DISTILL + """  alpha: 0.5
  epochs: 2
prune:
  type: [none, structured]
  ratio: {low: 0.25, high: 0.5, step: 0.25}
  recovery_steps: 4
quant:
  bits: [32, 8, 4]
  group_size: [32]
  activations: [none, dynamic_int8]
"""
ESTIMATED = """name: {name}
device:
  latency: estimated
  memory_mb: 4096
  memory_bandwidth_gbps: {bw}
  peak_tops: {{fp32: 0.2, int8: 0.8}}
  tail_factor: 1.3
workload: {{batch_size: 1, sequence_length: 16}}
budget:
  memory_mb: {memory}
  p99_latency_ms: {p99}
  accuracy_floor: {{max_drop: 0.5}}
"""
MEASURED = """name: tiny_here
device: {latency: measured, memory_mb: 1000, threads: 1}
workload: {batch_size: 1, sequence_length: 16}
budget:
  memory_mb: 50
  p99_latency_ms: 100
  accuracy_floor: {max_drop: 0.5}
"""


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEARCH_RESULTS_DIR": str(root / "results")}
    return subprocess.run([sys.executable, "-m", "search", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=900)


def digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished search on a spec-only target (no latency measurement: quick)."""
    root = tmp_path_factory.mktemp("replan")
    task = write_tiny_task(root / "task")
    (root / "space.yaml").write_text(SPACE)
    (root / "pi.yaml").write_text(ESTIMATED.format(name="tiny_pi", bw=8, memory=4, p99=5))
    proc = cli(root, "run", "--target", str(root / "pi.yaml"), "--space", str(root / "space.yaml"), "--task",
               str(task), "--trials", "4", "--threads", "1", "--run-id", "src")
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    return root


def _trials(run: Path):
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{run / 'study.db'}")
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def test_replan_onto_the_run_own_target_reproduces_its_figures_and_choice(source):
    root = source
    before = digest(root / "results" / "src")
    proc = cli(root, "replan", "src", "--target", str(root / "pi.yaml"), "--run-id", "same")
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    assert "nothing trained" in proc.stdout
    assert digest(root / "results" / "src") == before  # the original run is never modified
    old, new = _trials(root / "results" / "src"), _trials(root / "results" / "same")
    assert [t.params for t in old] == [t.params for t in new]
    for o, n in zip(old, new):
        for key in ("accuracy", "memory_mb", "p99_latency_ms", "p99_latency_ms_upper"):
            assert n.user_attrs[key] == pytest.approx(o.user_attrs[key], rel=1e-9), key
        assert n.user_attrs["replan_of_trial"] == o.number
    src_sel = json.loads((root / "results" / "src" / "selected.json").read_text())
    new_sel = json.loads((root / "results" / "same" / "selected.json").read_text())
    assert new_sel["meets_budget"] == src_sel["meets_budget"]
    assert new_sel["params"] == src_sel["params"] and new_sel["bounds"] == src_sel["bounds"]
    assert new_sel["replan_of"] == {"run": "src", "trial": src_sel["trial"]}
    # a replan folder is a run folder: export ships from it (this generous budget is always met)
    assert new_sel["meets_budget"], new_sel["why"]
    proc = cli(root, "export", "same", "--out", str(root / "ship"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Confidence bounds" in (root / "ship" / "DEPLOY.md").read_text()
    # a second `select` on it keeps naming the source's trial
    assert cli(root, "select", "same").returncode == 0
    assert json.loads((root / "results" / "same" / "selected.json").read_text())["replan_of"] == new_sel["replan_of"]


def test_replan_choice_equals_a_recomputation_from_the_stored_trials(source):
    """Another device and budget: re-price each stored trial here with the roofline, and select by hand."""
    from search import confidence, pareto
    from search.measure import memory, roofline
    from search import flows
    from search.outputs import evidence
    from search.families.base import ModelShape
    from search.flows.text_classification.reprice import candidate
    from search.run_dir import RunDir
    from search.target import load_target

    root = source
    (root / "tight.yaml").write_text(ESTIMATED.format(name="tiny_tight", bw=2, memory=1.0, p99=0.6))
    proc = cli(root, "replan", "src", "--target", str(root / "tight.yaml"))
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    out = root / "results" / "src.replan-tiny_tight"
    got = json.loads((out / "selected.json").read_text())

    target = load_target(str(root / "tight.yaml"))
    src = RunDir(root / "results" / "src")
    teacher = json.loads(src.teacher_json.read_text())
    budget = flows.get("classification").resolved_budget(target, teacher)
    rows = []
    for t in _trials(src.root):
        a, cand = t.user_attrs, candidate(t.user_attrs)
        shape = ModelShape.from_json(a["shape"])
        lat = roofline.estimate(shape, cand.quant, target.device, 1, 16, False)
        mem = a["weight_mb"] + memory.activation_bytes(shape, 1, 16) / memory.MB
        rows.append({"trial": t.number, "params": t.params,
                     "metrics": {"accuracy": a["accuracy"], "p99_latency_ms": lat.p99_ms, "memory_mb": mem,
                                 "p99_latency_ms_upper": lat.p99_ms * (1 + target.device.latency_error_pct / 100),
                                 "latency_bound_method": "recomputed"}})

    def vouch(r):
        return confidence.problems(confidence.bounds(r["metrics"], teacher, budget, evidence(src, r["trial"])),
                                   budget)

    want = pareto.select(rows, budget, "accuracy", vouch)
    assert got["meets_budget"] == want["meets_budget"]
    assert got["params"] == (want["selected"]["params"] if want["selected"] else None)
    assert got["budget"]["memory_mb"] == 1.0 and got["target"] == "tiny_tight"
    assert set(got["budget_cost"]) == {"p99_latency_ms", "memory_mb"}
    # asking again for the same folder is refused in one line, naming what to do; an interrupted one is named so
    again = cli(root, "replan", "src", "--target", str(root / "tight.yaml"))
    assert again.returncode == 2 and "already exists" in again.stderr and len(again.stderr.splitlines()) == 1
    (out / "selected.json").rename(out / "selected.json.bak")  # as a replan killed before it selected leaves it
    again = cli(root, "replan", "src", "--target", str(root / "tight.yaml"))
    assert again.returncode == 2 and "incomplete" in again.stderr and f"select {out.name}" in again.stderr
    (out / "selected.json.bak").rename(out / "selected.json")


def test_replan_onto_a_measured_target_measures_every_artifact_and_re_measures_the_choice(source):
    root = source
    (root / "here.yaml").write_text(MEASURED)
    proc = cli(root, "replan", "src", "--target", str(root / "here.yaml"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "measuring 4 completed trials" in proc.stdout and "re-measuring trial" in proc.stdout
    for t in _trials(root / "results" / "src.replan-tiny_here"):
        assert t.user_attrs["latency_source"] == "measured" and t.user_attrs["peak_rss_mb"] > 0
        # 200 runs cannot bound a p99 at 95%: the bound comes from select's 500-run re-measure of the choice
        assert t.user_attrs["p99_latency_ms_upper"] is None and "needs 299" in t.user_attrs["latency_bound_method"]
    bound = json.loads((root / "results" / "src.replan-tiny_here" / "selected.json").read_text())["bounds"]
    assert bound["p99_latency_ms"]["meets"] and "order statistic of 500" in bound["p99_latency_ms"]["method"]


def test_replan_adds_trials_where_the_front_is_thin(source):
    root = source
    # a memory budget that only the source's smallest trial meets (same device and workload: same figures)
    sizes = sorted({t.user_attrs["memory_mb"] for t in _trials(root / "results" / "src")})
    memory = (sizes[0] + sizes[1]) / 2 if len(sizes) > 1 else sizes[0] * 1.01
    (root / "thin.yaml").write_text(ESTIMATED.format(name="tiny_thin", bw=8, memory=f"{memory:.6f}", p99=5))
    proc = cli(root, "replan", "src", "--target", str(root / "thin.yaml"), "--trials", "1", "--threads", "1")
    assert proc.returncode in (0, 3), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "on the front within the new budget (< 3)" in proc.stdout and "adding 1 trial(s)" in proc.stdout
    assert len(_trials(root / "results" / "src.replan-tiny_thin")) == 5


def test_replan_refuses_another_runtime_and_a_missing_run(source):
    root = source
    proc = cli(root, "replan", "src", "--target", "local_cpu_llm")
    assert proc.returncode == 2 and "device.runtime" in proc.stderr and len(proc.stderr.splitlines()) == 1
    proc = cli(root, "replan", "nope", "--target", str(root / "pi.yaml"))
    assert proc.returncode == 2 and "no run here" in proc.stderr

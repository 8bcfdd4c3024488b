"""Nothing lost on a crash: a run SIGKILLed mid-trial resumes with every completed trial intact, the killed
trial FAIL with its reason, the exact count, and no recipe built twice."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from conftest import run_search, search_env, tiny_run_inputs, write_tiny_task

ROOT = Path(__file__).resolve().parent.parent
TARGET = """name: tiny_crash
device: {latency: estimated, memory_mb: 1000, memory_bandwidth_gbps: 50, peak_tops: {fp32: 0.5}}
workload: {batch_size: 1, sequence_length: 16}
budget: {memory_mb: 2.0, p99_latency_ms: 100, accuracy_floor: {max_drop: 0.5}}
"""


def test_sigkill_mid_trial_then_resume(tmp_path):
    env = search_env(tmp_path / "results")
    args = [sys.executable, "-m", "search", "run", *tiny_run_inputs(tmp_path, TARGET), "--trials", "4",
            "--threads", "1", "--run-id", "crash"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
    seen, building_after_done = [], False
    deadline = time.time() + 600
    for line in proc.stdout:  # kill once a trial has completed and the next one is being built
        seen.append(line)
        if "meets budget" in line or "over budget" in line:
            building_after_done = True
        elif building_after_done and "building ..." in line:
            break
        assert time.time() < deadline, "".join(seen[-20:])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = tmp_path / "results" / "crash"
    storage = f"sqlite:///{run / 'study.db'}"
    before = {t.number: t.values for t in optuna.load_study(study_name="search", storage=storage).trials
              if t.state == TrialState.COMPLETE}
    killed = [t.number for t in optuna.load_study(study_name="search", storage=storage).trials
              if t.state == TrialState.RUNNING]
    assert before and len(killed) == 1, "".join(seen[-20:])

    done = run_search(tmp_path / "results", "run", "--resume", "crash")
    assert done.returncode in (0, 3), done.stderr[-2000:]
    assert json.loads((run / "run.json").read_text())["trials"] == 4  # --resume alone continues the same run
    trials = optuna.load_study(study_name="search", storage=storage).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    assert all(t.values == before[t.number] for t in complete if t.number in before)  # intact
    dead = next(t for t in trials if t.number == killed[0])
    assert dead.state == TrialState.FAIL and "process died mid-trial" in dead.user_attrs["reason"]
    retried = [t for t in trials if t.user_attrs.get("retry_of") == dead.number]
    assert len(retried) == 1 and retried[0].params == dead.params  # the dead trial's recipe, tried once more
    built = [json.dumps(t.user_attrs["recipe"], sort_keys=True) for t in complete
             if "same_recipe_as_trial" not in t.user_attrs]
    assert len(built) == len(set(built))  # no recipe built twice
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_disk_full_fails_the_trial_with_the_os_error_then_stops_the_run(tmp_path, monkeypatch):
    import errno

    import pytest

    from search import study as study_mod
    from search.errors import RunStopped
    from search.space import load_space
    from search.target import load_target
    from search.tasks import load_task
    from search.tasks.teacher import prepare

    task = write_tiny_task(tmp_path / "task")
    (tmp_path / "target.yaml").write_text(TARGET)
    prepared = prepare(load_task(str(task)), tmp_path / "cache", log=lambda s: None)

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    from search import flows

    monkeypatch.setattr(flows.get("classification"), "run_candidate", full)
    run = tmp_path / "results" / "full"
    run.mkdir(parents=True)
    settings = study_mod.RunSettings(trials=3, timeout_s=None, seed=0, threads=1)
    with pytest.raises(RunStopped, match="two trials in a row could not write"):
        study_mod.run(flows.get("classification"), load_target(str(tmp_path / "target.yaml")), load_space(str(ROOT / "tests" / "golden_space.yaml")),
                      prepared, run, settings, resume=False, log=lambda s: None)
    trials = optuna.load_study(study_name="search", storage=f"sqlite:///{run / 'study.db'}").trials
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 2 and all("cannot write: No space left on device" in t.user_attrs["reason"] for t in failed)
    assert (run / "trials.csv").is_file()  # the tables were still written


def test_killing_the_final_writing_leaves_old_or_new_complete_files(tmp_path):
    """SIGKILL `select` at moments spread over its writing phase: every output is the old complete file or
    the new complete one, never half (tmp + rename; model/ swapped as a whole)."""
    env = search_env(tmp_path / "results")
    done = run_search(tmp_path / "results", "run", *tiny_run_inputs(tmp_path, TARGET), "--trials", "3",
                      "--threads", "1", "--run-id", "k")
    assert done.returncode in (0, 3), done.stderr[-2000:]
    run = tmp_path / "results" / "k"

    def complete_outputs():
        selected = json.loads((run / "selected.json").read_text())  # parses: not half written
        assert (run / "dashboard.html").read_text().rstrip().endswith("</html>")
        for name in ("trials.csv", "pareto.csv"):
            lines = (run / name).read_text().splitlines()
            assert lines and all(line.count(",") == lines[0].count(",") or '"' in line for line in lines[1:])
        if selected["model_dir"]:
            recipe = json.loads((run / "model" / "recipe.json").read_text())
            assert (run / "model" / "model.onnx").stat().st_size > 0 and isinstance(recipe["trial"], int)
        return selected

    complete_outputs()
    kills = 0
    for i, delay in enumerate([1.0, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0]):
        policy = ("memory", "latency", "knee", "accuracy")[i % 4]
        proc = subprocess.Popen([sys.executable, "-m", "search", "select", "k", "--policy", policy], cwd=ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        complete_outputs()
    assert kills >= 3  # most attempts really did interrupt it
    finished = run_search(tmp_path / "results", "select", "k", "--policy", "memory", timeout=300)
    assert finished.returncode in (0, 3) and complete_outputs()["policy"] == "memory"

"""Many workers on one study: a real PostgreSQL server on loopback, three worker processes in separate working
directories sharing only the database and the results folder. The count is exact, no recipe is built twice,
every worker contributed, and the selection equals a recomputation from the database."""
from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import search_env, tiny_run_inputs

TARGET = """name: tiny_workers
device: {latency: estimated, memory_mb: 1000, memory_bandwidth_gbps: 50, peak_tops: {fp32: 0.5}}
workload: {batch_size: 1, sequence_length: 16}
budget: {memory_mb: 2.0, p99_latency_ms: 100, accuracy_floor: {max_drop: 0.5}}
"""
TRIALS = 9


def _bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


@pytest.fixture(scope="module")
def postgres():
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not (initdb and pg_ctl):
        if os.environ.get("SEARCH_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required here (SEARCH_REQUIRE_POSTGRES=1) but initdb/pg_ctl were not found")
        pytest.skip("PostgreSQL server binaries not installed (make setup installs Debian's postgresql as root)")
    root = Path(tempfile.mkdtemp(prefix="search-pg-", dir="/tmp"))
    as_user = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    os.chmod(root, 0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust"], check=True,
                   capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "start", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1"], check=True, capture_output=True)
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE search")
    yield f"postgresql://postgres@127.0.0.1:{port}/search"
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def test_three_workers_on_one_postgres_study(postgres, tmp_path):
    inputs = tiny_run_inputs(tmp_path, TARGET)
    shared = tmp_path / "shared-results"
    env = search_env(shared)
    workdirs = [tmp_path / f"machine{i}" for i in range(3)]
    for d in workdirs:
        d.mkdir()
    first = subprocess.Popen([sys.executable, "-m", "search", "run", "--storage", postgres, "--run-id", "w",
                              *inputs, "--trials", str(TRIALS), "--threads", "1"],
                             cwd=workdirs[0], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (shared / "w" / "run.json").is_file():
        assert time.time() < deadline and first.poll() is None, first.stdout.read()[-3000:]
        time.sleep(0.2)
    others = [subprocess.Popen([sys.executable, "-m", "search", "worker", "w", "--threads", "1"], cwd=d, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for d in workdirs[1:]]
    logs = [p.communicate(timeout=900)[0] for p in [first, *others]]
    for p, log in zip([first, *others], logs):
        assert p.returncode in (0, 3), log[-3000:]

    study = optuna.load_study(study_name="w", storage=postgres)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == TRIALS, "\n".join(log[-1500:] for log in logs)  # exact, over all workers
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    built = [t for t in complete if "same_recipe_as_trial" not in t.user_attrs]
    recipes = [json.dumps(t.user_attrs["recipe"], sort_keys=True) for t in built]
    assert len(recipes) == len(set(recipes))  # no recipe built twice
    assert {t.user_attrs["worker"] for t in built} == {0, 1, 2}, "\n".join(log[-1500:] for log in logs)
    assert sum("measuring the fp32 teacher artifact" in log for log in logs) == 1  # the teacher measured once
    assert sum("teacher fine-tuned in" in log for log in logs) <= 1

    from search import outputs, pareto

    run = shared / "w"
    selected = json.loads((run / "selected.json").read_text())
    saved = json.loads((run / "budget.json").read_text())
    again = pareto.select(outputs.completed_rows(study), saved["budget"], selected["policy"])
    assert selected["trial"] == (again["selected"] or {}).get("trial") and selected["meets_budget"] == again["meets_budget"]
    assert sum("results in" in log for log in logs) == 1  # selection and export happened once

"""Bad input gets one line naming the file/flag, the key and the fix, and exit 2; nothing is written outside
results/, and no user file is deleted (cases from the hostile-user review, issue 11)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import search.__main__ as cli
from conftest import write_tiny_task

ROOT = Path(__file__).resolve().parent.parent
TARGET = (ROOT / "targets" / "local_cpu.yaml").read_text()
SPACE = str(ROOT / "tests" / "golden_space.yaml")


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "RESULTS_DIR", tmp_path / "results")
    return tmp_path / "results"


def one_line_exit_2(capsys, argv) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv, says", [
    (["run", "--run-id", "../escape", "--trials", "1"], "--run-id: ../escape: a run id is one folder name"),
    (["run", "--run-id", "/abs/escape", "--trials", "1"], "--run-id: /abs/escape"),
    (["run", "--run-id", "a/b", "--trials", "1"], "--run-id: a/b"),
    (["run", "--run-id", "..", "--trials", "1"], "--run-id: .."),
    (["run", "--resume", "../x"], "--resume: ../x"),
    (["run", "--threads", "0"], "--threads: got 0; must be >= 1"),
    (["run", "--trials", "0"], "--trials: got 0; must be >= 1"),
    (["run", "--timeout-min", "-1"], "--timeout-min: got -1.0"),
    (["run", "--timeout-min", "inf"], "--timeout-min: got inf"),
    (["bench", "latency", "--candidates", "0"], "--candidates: got 0"),
])
def test_bad_flags(capsys, results, argv, says):
    assert says in one_line_exit_2(capsys, argv)
    assert not (results.parent / "escape").exists() and not Path("/abs/escape").exists()


@pytest.mark.parametrize("edit, key", [
    (("memory_mb: 40", "memory_mb: .nan"), "budget.memory_mb: got nan; expected a finite number"),
    (("memory_mb: 40", "memory_mb: .inf"), "budget.memory_mb: got inf; expected a finite number"),
    (("p99_latency_ms: 12.0", "p99_latency_ms: .nan"), "budget.p99_latency_ms: got nan"),
])
def test_non_finite_budgets(capsys, results, tmp_path, edit, key):
    assert edit[0] in TARGET, edit
    bad = tmp_path / "t.yaml"
    bad.write_text(TARGET.replace(*edit))
    assert f"{bad}: {key}" in one_line_exit_2(capsys, ["run", "--target", str(bad)])


def test_a_target_name_cannot_escape_results():
    from search.schema import slug

    assert slug("../x") == "x" and slug("/abs/x") == "abs-x" and slug("a/b") == "a-b" and slug("..") == "run"


def test_binary_target_file(capsys, results, tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_bytes(bytes(range(256)) * 4)
    assert f"{bad}: -: not a UTF-8 text file" in one_line_exit_2(capsys, ["run", "--target", str(bad)])


def test_nan_knob_in_space(capsys, results, tmp_path):
    space = (ROOT / "spaces" / "default.yaml").read_text()
    bad = tmp_path / "s.yaml"
    bad.write_text(space.replace("temperature: {low: 1.0, high: 4.0, step: 1.0}", "temperature: .nan"))
    assert f"{bad}: distill.temperature: got nan" in one_line_exit_2(capsys, ["run", "--space", str(bad)])


def _task(tmp_path, rows=None) -> Path:
    task = write_tiny_task(tmp_path / "task")
    if rows is not None:
        (tmp_path / "task" / "data.csv").write_text("sentence,y\n" + "".join(f"{t},{y}\n" for t, y in rows))
    return task


def test_too_small_dataset_is_refused_with_counts(capsys, results, tmp_path):
    task = _task(tmp_path, [(f"good text {i}", "pos" if i % 2 else "neg") for i in range(5)])
    err = one_line_exit_2(capsys, ["run", "--task", str(task), "--space", SPACE, "--trials", "1"])
    assert f"{task}: data.path: class" in err and "every class needs >= 10" in err
    assert not results.exists() or not any(p.name != "cache" for p in results.iterdir())  # no run folder made


def test_contradictory_labels_are_refused(capsys, results, tmp_path):
    rows = [(f"good text {i}", "pos" if i % 2 else "neg") for i in range(40)] + [("good text 1", "neg")]
    task = _task(tmp_path, rows)
    err = one_line_exit_2(capsys, ["run", "--task", str(task), "--space", SPACE, "--trials", "1"])
    assert f"{task}: data.label_column: 1 text(s) occur with different labels" in err


def test_pickled_teacher_weights_need_an_explicit_yes(capsys, results, tmp_path):
    import torch
    from safetensors.torch import load_file

    task = _task(tmp_path)
    teacher = tmp_path / "task" / "teacher"
    torch.save(load_file(str(teacher / "model.safetensors")), teacher / "pytorch_model.bin")
    (teacher / "model.safetensors").unlink()
    target = tmp_path / "short.yaml"  # sequences the tiny teacher's 64 positions take
    target.write_text((ROOT / "targets" / "jetson_orin.yaml").read_text().replace("sequence_length: 128",
                                                                                   "sequence_length: 16"))
    err = one_line_exit_2(capsys, ["run", "--task", str(task), "--space", SPACE, "--trials", "1",
                                   "--target", str(target)])
    assert f"{task}: teacher: " in err and "no .safetensors weights" in err and "teacher_weights: any" in err


def _finished_run(root: Path) -> Path:
    """The files `export` reads, as a finished run leaves them (the artifact is a stand-in file)."""
    run = root / "run"
    (run / "trials" / "0000").mkdir(parents=True)
    (run / "trials" / "0000" / "model.onnx").write_bytes(b"artifact")
    (run / "tokenizer").mkdir()
    (run / "tokenizer" / "vocab.txt").write_text("[PAD]\n")
    (run / "study.db").write_bytes(b"")
    metrics = {"accuracy": 0.9, "memory_mb": 1.0, "p50_latency_ms": 1.0, "p99_latency_ms": 1.0,
               "latency_source": "measured"}
    (run / "selected.json").write_text(json.dumps({
        "trial": 0, "params": {}, "metrics": metrics, "teacher": metrics, "meets_budget": True, "why": ["x"],
        "target": "t", "budget": {"memory_mb": 2, "p99_latency_ms": 2, "accuracy_floor": 0.5,
                                  "accuracy_floor_rule": ">= 0.5"}}))
    (run / "budget.json").write_text(json.dumps({"classes": [0, 1], "max_length": 16, "artifact_name": "model.onnx",
                                                 "backend": "onnxruntime"}))
    return run


def test_export_never_deletes_the_users_files(capsys, tmp_path):
    run = _finished_run(tmp_path)
    out = tmp_path / "ship"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    err = one_line_exit_2(capsys, ["export", str(run), "--out", str(out)])
    assert "--out: folder is not empty" in err and "--force" in err
    assert (out / "mine.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1

    assert cli.main(["export", str(run), "--out", str(out), "--force"]) == 0
    assert (out / "mine.txt").read_text() == "keep me"
    assert (out / "model.onnx").read_bytes() == b"artifact" and (out / "DEPLOY.md").is_file()
    assert "mine.txt" not in (out / "DEPLOY.md").read_text()  # the card lists only what export wrote


def test_export_onto_a_file_is_one_line(capsys, tmp_path):
    run = _finished_run(tmp_path)
    target = tmp_path / "file.txt"
    target.write_text("keep")
    assert "--out: exists and is not a folder" in one_line_exit_2(capsys, ["export", str(run), "--out", str(target)])
    assert target.read_text() == "keep"
    shutil.rmtree(run)

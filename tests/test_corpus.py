"""A corpus of malformed targets, spaces, tasks and command lines (issue 11): each one is refused with exit 2
and one line naming the file (or flag) and the key, with no traceback and no run folder made; plus
property-based fuzzing of the YAML loaders: they raise ConfigError or succeed, never anything else."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import search.__main__ as cli
from conftest import write_tiny_task
from search.errors import ConfigError
from search.space import load_space
from search.target import load_target
from search.tasks import load_task

ROOT = Path(__file__).resolve().parent.parent
TARGET = (ROOT / "targets" / "local_cpu.yaml").read_text()
SPACE = (ROOT / "spaces" / "default.yaml").read_text()

TARGET_CASES = [  # (edit of local_cpu.yaml, key the error must name)
    (("latency: measured", "latency: sometimes"), "device.latency"),
    (("memory_mb: 24000", "memory_mb: -5"), "device.memory_mb"),
    (("memory_mb: 24000", "memory_mb: zero"), "device.memory_mb"),
    (("memory_mb: 24000", "memory_mb: .nan"), "device.memory_mb"),
    (("memory_mb: 24000", "memory_mb: 30"), "budget.memory_mb"),  # budget above the device
    (("threads: 1 ", "threads: 0 "), "device.threads"),
    (("threads: 1 ", "threads: 1.5 "), "device.threads"),
    (("threads: 1 ", "threads: true "), "device.threads"),
    (("batch_size: 1", "batch_size: 0"), "workload.batch_size"),
    (("batch_size: 1", "batch_size: .inf"), "workload.batch_size"),
    (("sequence_length: 128", "sequence_length: 100000"), "workload.sequence_length"),
    (("sequence_length: 128", "sequence_length: -1"), "workload.sequence_length"),
    (("p99_latency_ms: 12.0", "p99_latency_ms: 0"), "budget.p99_latency_ms"),
    (("p99_latency_ms: 12.0", "p99_latency_ms: -.inf"), "budget.p99_latency_ms"),
    (("max_drop: 0.015", "max_drop: 2"), "budget.accuracy_floor.max_drop"),
    (("max_drop: 0.015", "max_drop: .nan"), "budget.accuracy_floor.max_drop"),
    (("max_drop: 0.015", "max_drop: 0.015\n    absolute: 0.9"), "budget.accuracy_floor"),
    (("workload:", "wrokload:"), "workload: missing"),
    (("budget:", "budget_typo:"), "budget: missing"),
    (("name: local_cpu", "name: [a, b]"), "name"),
    (("    fp32: 0.118", "    fp32: -1"), "device.peak_tops.fp32"),
    (("    fp32: 0.118", "    fp128: 1"), "device.peak_tops.fp128"),
    (("  latency: measured", "  latency: measured\n  runtime: tensorrt"), "device.runtime"),
    (("  latency: measured", "  latency: measured\n  runner: {command: 42}"), "device.runner.command"),
    (("    max_drop: 0.015", "    max_drop: 0.015\n  confidence: 1.5"), "budget.confidence"),
    (("    max_drop: 0.015", "    max_drop: 0.015\n  confidence: .nan"), "budget.confidence"),
    (("  latency: measured", "  latency: measured\n  latency_error_pct: 20"), "device.latency_error_pct"),
]
SPACE_CASES = [  # (edit of spaces/default.yaml, key)
    (("layers: {low: 1, high: 4}", "layers: {low: 4, high: 1}"), "distill.layers"),
    (("layers: {low: 1, high: 4}", "layers: {low: 0, high: 4}"), "distill.layers"),
    (("layers: {low: 1, high: 4}", "layers: {low: 1, high: 4, step: 0}"), "distill.layers"),
    (("layers: {low: 1, high: 4}", "layers: {low: 1.5, high: 4}"), "distill.layers"),
    (("layers: {low: 1, high: 4}", "layers: {low: 1, high: 4, stride: 1}"), "distill.layers"),
    (("temperature: {low: 1.0, high: 4.0, step: 1.0}", "temperature: .nan"), "distill.temperature"),
    (("temperature: {low: 1.0, high: 4.0, step: 1.0}", "temperature: {low: 1.0, high: .inf}"),
     "distill.temperature"),
    (("alpha: {low: 0.5, high: 1.0, step: 0.25}", "alpha: 2.0"), "distill.alpha"),
    (("vocab: [full, task]", "vocab: []"), "distill.vocab"),
    (("vocab: [full, task]", "vocab: [full, half]"), "distill.vocab"),
    (("bits: [32, 8, 4, 2]", "bits: [3]"), "quant.bits"),
    (("bits: [32, 8, 4, 2]", "bits: [true]"), "quant.bits"),
    (("group_size: [32, 64, 128, channel]", "group_size: [48]"), "quant.group_size"),
    (("type: [none, unstructured, structured, \"2:4\"]", "type: [\"1:2\"]"), "prune.type"),
    (("ratio: {low: 0.2, high: 0.6, step: 0.1}", "ratio: {low: 0.2, high: 0.99}"), "prune.ratio"),
    (("quant:", "quantize:"), "quant: missing"),
    (("hidden: {low: 192, high: 384, step: 64}", "hidden: {low: 192, high: 384, step: 48}"), "distill.hidden"),
    (("hidden: {low: 192, high: 384, step: 64}", "hidden: 768"), "distill.hidden"),  # larger than the teacher
]
TASK_CASES = [  # (task.yaml text replacing the tiny one's, key)
    ("name: t\nteacher: nowhere\ndata: {path: data.csv}\n", "teacher"),
    ("name: t\nteacher: teacher\ndata: {path: missing.csv}\n", "data.path"),
    ("name: t\nteacher: teacher\ndata: {path: data.txt}\n", "data.path"),
    ("name: t\nteacher: teacher\ndata: {path: data.csv, text_column: nope}\n", "data.text_column"),
    ("name: t\nteacher: teacher\ndata: {path: data.csv, text_column: sentence, label_column: nope}\n",
     "data.label_column"),
    ("name: t\nteacher: teacher\ndata: {path: data.csv, text_column: sentence, label_column: y, "
     "validation_fraction: 0}\n", "data.validation_fraction"),
    ("name: t\nteacher: teacher\ndata: {path: data.csv, text_column: sentence, label_column: y}\nmax_length: 4\n",
     "max_length"),
    ("name: t\nteacher: teacher\ndata: {path: data.csv, text_column: sentence, label_column: y}\n"
     "finetune: {epochs: .nan}\n", "finetune.epochs"),
    ("name: t\nteacher: teacher\ndata: {path: data.csv, text_column: sentence, label_column: y}\nfamily: gpt\n",
     "family"),
    ("name: t\nteacher: teacher\ndata: {path: data.csv, text_column: sentence, label_column: y}\n"
     "teacher_weights: pickle\n", "teacher_weights"),
    ("name: t\nteacher: teacher\ndata: {path: data.csv, text_column: sentence, label_column: y, "
     "unlabelled: none.txt}\n", "data.unlabelled"),
    ("- just\n- a list\n", "-"),
    ("name: t\nteacher: teacher\ndata: {path: data.csv\n", "line"),
]
CLI_CASES = [  # (argv, text the one line must hold)
    (["run", "--target", "no-such-target"], "no such target file"),
    (["run", "--space", "no-such-space"], "no such space file"),
    (["run", "--task", "/nonexistent/task.yaml"], "no such task file"),
    (["run", "--storage", "mysql://x"], "--storage: mysql://x"),
    (["run", "--resume", "never-ran"], "--resume: no such run"),
    (["run", "--run-id", "x" * 101], "--run-id"),
    (["run", "--run-id", "with space"], "--run-id"),
    (["worker", "never-ran"], "RUN: no such run"),
    (["worker", "../up"], "RUN: ../up"),
    (["select", "never-ran"], "never-ran: RUN: no run here"),
    (["report", "never-ran"], "never-ran: RUN: no run here"),
    (["export", "never-ran", "--out", "x"], "never-ran: RUN: no run here"),
    (["replan", "never-ran", "--target", "raspberry_pi5"], "never-ran: RUN: no run here"),
]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(capsys, argv: list[str], results: Path) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not results.exists() or not [p for p in results.iterdir() if p.name != "cache"], "a run folder was made"
    return err


FILE_CASES = [("target", TARGET, edit, key) for edit, key in TARGET_CASES] + \
    [("space", SPACE, edit, key) for edit, key in SPACE_CASES]

LM_TARGET = (ROOT / "targets" / "local_cpu_llm.yaml").read_text()
LM_SPACE = (ROOT / "spaces" / "llm.yaml").read_text()
LM_CASES = [  # (kind, edit of local_cpu_llm.yaml or spaces/llm.yaml, key): language-model inputs
    ("target", ("kld_ceiling: 0.1 ", "top1_agreement_floor: 0.9\n  kld_ceiling: 0.1 "), "budget.-"),
    ("target", ("kld_ceiling: 0.1 ", "accuracy_floor: {max_drop: 0.01} "), "budget.-"),
    ("target", ("kld_ceiling: 0.1 ", "kld_ceiling: -1 "), "budget.kld_ceiling"),
    ("target", ("tpot_p99_ms: 55 ", "tpot_p99_ms: .nan "), "budget.tpot_p99_ms"),
    ("target", ("tpot_p99_ms: 55 ", "p99_latency_ms: 55 "), "budget.tpot_p99_ms"),
    ("target", ("context_tokens: 2048", "context_tokens: 100"), "workload.context_tokens"),
    ("target", ("prompt_tokens: 128", "batch_size: 1"), "workload.prompt_tokens"),
    ("space", ("drop_layers: {low: 0, high: 6}", "drop_layers: {low: 0, high: 60}"), "cut.drop_layers"),
    ("space", ("ffn: {low: 1024, high: 1536, step: 256}", "ffn: 1000"), "cut.ffn"),
    ("space", ("bits_per_weight: {low: 4.5, high: 8.5, step: 0.25}", "bits_per_weight: 99"), "gguf.bits_per_weight"),
    ("space", ("exclude: [Q4_1, Q5_1, Q4_K, Q5_K]", "exclude: [Q9_9]"), "gguf.exclude"),
    ("space", ("  exclude: [Q4_1, Q5_1, Q4_K, Q5_K]", "  types: {ffn_down: Q8_0}"), "gguf.-"),
]


@pytest.mark.parametrize("kind, text, edit, key", FILE_CASES, ids=[f"{c[0]}:{c[3]}" for c in FILE_CASES])
def test_target_and_space_corpus(capsys, env, kind, text, edit, key):
    assert edit[0] in text
    bad = env / f"{kind}.yaml"
    bad.write_text(text.replace(*edit, 1))
    assert f"{bad}: {key}" in refused(capsys, ["run", f"--{kind}", str(bad)], env / "results")


@pytest.mark.parametrize("kind, edit, key", LM_CASES, ids=[f"lm-{c[0]}:{c[2]}" for c in LM_CASES])
def test_language_model_corpus(capsys, env, kind, edit, key):
    text = LM_TARGET if kind == "target" else LM_SPACE
    assert edit[0] in text
    bad = env / f"{kind}.yaml"
    bad.write_text(text.replace(*edit, 1))
    other = ["--space", "llm"] if kind == "target" else ["--target", "local_cpu_llm"]
    assert f"{bad}: {key}" in refused(capsys, ["run", f"--{kind}", str(bad), *other], env / "results")


@pytest.mark.parametrize("text, key", TASK_CASES, ids=[k for _, k in TASK_CASES])
def test_task_corpus(capsys, env, text, key):
    task = write_tiny_task(env / "task")
    task.write_text(text)
    capsys.readouterr()  # the fixture's own progress output
    space = str(ROOT / "tests" / "golden_space.yaml")
    assert f"{task}: {key}" in refused(capsys, ["run", "--task", str(task), "--space", space], env / "results")


@pytest.mark.parametrize("argv, says", CLI_CASES, ids=[" ".join(a)[:40] for a, _ in CLI_CASES])
def test_command_line_corpus(capsys, env, argv, says):
    assert says in refused(capsys, argv, env / "results")


def test_the_corpus_is_large_enough():
    from test_hostile import test_bad_flags  # the hostile-user cases of issue 11 live there too

    n = len(TARGET_CASES) + len(SPACE_CASES) + len(TASK_CASES) + len(CLI_CASES) + len(LM_CASES)
    n += len(test_bad_flags.pytestmark[0].args[1])
    assert n >= 60, n


# -- fuzzing: whatever YAML a user writes, the loaders answer with ConfigError or a valid object -------------
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["measured", "estimated", "fp32", "none", "task", "2:4"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                      max_leaves=12)
KEYS = {"target": ["name", "device", "workload", "budget", "latency", "memory_mb", "threads", "batch_size",
                   "sequence_length", "p99_latency_ms", "accuracy_floor", "max_drop", "absolute", "peak_tops"],
        "space": ["distill", "prune", "quant", "layers", "hidden", "bits", "low", "high", "step", "type"],
        "task": ["name", "teacher", "data", "path", "text_column", "label_column", "max_length", "finetune"]}


def mappings(kind: str):
    keys = st.sampled_from(KEYS[kind]) | st.text(max_size=8)
    return st.dictionaries(keys, values | st.dictionaries(keys, values, max_size=5), max_size=6)


def _load(kind: str, path: Path):
    return {"target": load_target, "space": load_space, "task": load_task}[kind](str(path))


@pytest.mark.parametrize("kind", ["target", "space", "task"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_yaml_loaders_fuzzed(tmp_path, kind, data):
    doc = data.draw(mappings(kind) | values)
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        loaded = _load(kind, path)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))
        return
    if kind == "target":  # accepted: every number in it is finite
        b = loaded.budget
        assert all(math.isfinite(x) for x in (b.memory_mb, b.p99_latency_ms, loaded.device.memory_mb))


@pytest.mark.parametrize("kind", ["target", "space", "task"])
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=200))
def test_yaml_loaders_fuzzed_with_bytes(tmp_path, kind, blob):
    path = tmp_path / f"{kind}.yaml"
    path.write_bytes(blob)
    try:
        _load(kind, path)
    except ConfigError as exc:
        assert "\n" not in str(exc)

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
from test_workers import postgres  # noqa: F401  (fixture: a real PostgreSQL server on loopback)
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


def test_a_sequence_longer_than_the_teacher_takes_is_refused_before_any_work(capsys, env):
    """The tiny teacher has 64 positions: a workload of 128 tokens would fail in the teacher's measurement."""
    task = write_tiny_task(env / "task")
    capsys.readouterr()
    target = env / "long.yaml"
    target.write_text(TARGET)  # local_cpu.yaml: 128 tokens
    assert "sequence_length: 128" in TARGET
    space = str(ROOT / "tests" / "golden_space.yaml")
    err = refused(capsys, ["run", "--task", str(task), "--space", space, "--target", str(target)], env / "results")
    assert f"{target}: workload.sequence_length: got 128; the teacher" in err and "at most 64 tokens" in err


@pytest.mark.parametrize("argv, says", CLI_CASES, ids=[" ".join(a)[:40] for a, _ in CLI_CASES])
def test_command_line_corpus(capsys, env, argv, says):
    assert says in refused(capsys, argv, env / "results")


def test_the_corpus_is_large_enough():
    from test_hostile import test_bad_flags  # the hostile-user cases of issue 11 live there too

    n = len(TARGET_CASES) + len(SPACE_CASES) + len(TASK_CASES) + len(CLI_CASES) + len(LM_CASES)
    n += len(test_bad_flags.pytestmark[0].args[1])
    n += len(LM_TASK_CASES) + len(STORAGE_CASES) + len(DAMAGE_CASES) + 4  # issue 36 (below); 4: damaged study.db
    assert n >= 130, n


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


# -- issue 36: language-model task files, --storage, damaged run folders, and what export/report/replan write -------
# Each case: exit 2, one line naming the file (or flag), the key and the fix, no traceback, no run folder, nothing
# written outside the results folder, no user file touched. The LM cases name the packaged SmolLM2 GGUF as teacher
# or tokenizer: only its header and vocabulary are read (the checks run before anything is loaded).
import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402

import numpy as np  # noqa: E402

from search.flows.causal_lm.task import default_lm_task  # noqa: E402

SMOLLM2 = default_lm_task().teacher_gguf
WORDS = "the quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun".split()
SECRET = "hunter2secret"  # a password given in --storage: it must reach no message and no file


def digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _hf_teacher(d: Path, config: str = '{"model_type": "llama", "num_hidden_layers": 2, "intermediate_size": 128, '
                                      '"num_attention_heads": 4}', weights: bytes | None = None) -> str:
    """A Hugging Face teacher directory (config.json, safetensors) with SMOLLM2 as its tokenizer GGUF."""
    from safetensors.numpy import save_file

    (d / "hf").mkdir()
    (d / "hf" / "config.json").write_text(config)
    if weights is None:
        save_file({"w": np.zeros(4, np.float32)}, str(d / "hf" / "model.safetensors"))
    else:
        (d / "hf" / "model.safetensors").write_bytes(weights)
    return "hf"


def _put(path: Path, data: bytes | str, edits: dict) -> dict:
    """Write a case's file; the task.yaml edits that name it."""
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return edits


def _noise(n: int) -> bytes:
    return np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()  # never valid UTF-8 at this size


LM_TASK_CASES = {  # id: (writes the case's files into the task folder and returns its task.yaml edits, key, says)
    "teacher config.json malformed": (
        lambda d: {"teacher": _hf_teacher(d, config='{"model_type": "llama", '), "tokenizer_gguf": str(SMOLLM2)},
        "teacher", "config.json is not valid JSON"),
    "teacher safetensors header damaged": (
        lambda d: {"teacher": _hf_teacher(d, weights=_noise(100)), "tokenizer_gguf": str(SMOLLM2)},
        "teacher", "is not a readable safetensors file"),
    "GGUF truncated to 1 MB": (lambda d: _put(d / "t.gguf", SMOLLM2.read_bytes()[:1 << 20], {"teacher": "t.gguf"}),
                               "teacher", "is not a readable GGUF (damaged or truncated"),
    "random bytes named .gguf": (lambda d: _put(d / "t.gguf", _noise(300_000), {"teacher": "t.gguf"}),
                                 "teacher", "not a GGUF file"),
    "empty .gguf": (lambda d: _put(d / "t.gguf", b"", {"teacher": "t.gguf"}), "teacher", "an empty file (0 bytes)"),
    "tokenizer GGUF damaged": (
        lambda d: _put(d / "tok.gguf", _noise(5000), {"teacher": _hf_teacher(d), "tokenizer_gguf": "tok.gguf"}),
        "tokenizer_gguf", "not a GGUF file"),
    "empty CSV as calibration": (lambda d: _put(d / "c.csv", "", {"calibration": "c.csv"}),
                                 "data.calibration", "c.csv is empty"),
    "binary file named .csv": (lambda d: _put(d / "c.csv", _noise(5000), {"calibration": "c.csv"}),
                               "data.calibration", "is not UTF-8 text"),
    "CSV with an unclosed quote": (lambda d: _put(d / "c.csv", 'text\n"never closed\nmore\n', {"calibration": "c.csv"}),
                                   "data.calibration", "is not a well-formed CSV"),
    "CSV without the text column": (lambda d: _put(d / "c.csv", "words\nhello there\n", {"calibration": "c.csv"}),
                                    "data.text_column", "column 'text' not in c.csv"),
    "empty calibration text": (lambda d: _put(d / "e.txt", "", {"calibration": "e.txt"}),
                               "data.calibration", "holds no text"),
    "blank evaluation text": (lambda d: _put(d / "e.txt", " \n\n \n", {"evaluation": "e.txt"}),
                              "data.evaluation", "holds no text"),
    "NUL bytes as evaluation text": (lambda d: _put(d / "e.txt", b"\0" * 4096, {"evaluation": "e.txt"}),
                                     "data.evaluation", "is binary"),
    "300 kB of random bytes as evaluation text": (lambda d: _put(d / "e.txt", _noise(300_000), {"evaluation": "e.txt"}),
                                                  "data.evaluation", "is not UTF-8 text"),
    "window_tokens longer than the text": (lambda d: {"window_tokens": 4096}, "data.evaluation",
                                           "2 windows of 4096 need"),
    "eval_windows more than the text holds": (lambda d: {"eval_windows": 500}, "data.evaluation",
                                              "500 windows of 64 need"),
    "calibration_tokens more than the text holds": (lambda d: {"calibration_tokens": 100000}, "data.calibration",
                                                    "need at least 100000"),
}


def write_lm_task(d: Path, edits: dict) -> Path:
    """An LM task folder: SMOLLM2 as teacher, ~3000/1500 words of calibration/evaluation text, 2 windows of 64."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("calib.txt", 3000), ("heldout.txt", 1500)):
        (d / name).write_text(" ".join(rng.choice(WORDS, n)))
    top = {"task_type": "causal_lm", "teacher": str(SMOLLM2)}
    data = {"calibration": "calib.txt", "evaluation": "heldout.txt", "window_tokens": 64, "eval_windows": 2,
            "calibration_tokens": 1024}
    for k, v in edits.items():
        (data if k in data else top)[k] = v
    (d / "task.yaml").write_text(yaml.safe_dump({**top, "data": data}))
    return d / "task.yaml"


@pytest.mark.parametrize("case", list(LM_TASK_CASES))
def test_language_model_task_files_are_checked_before_anything_loads(capsys, env, case):
    write, key, says = LM_TASK_CASES[case]
    folder = env / "task"
    folder.mkdir()
    task = write_lm_task(folder, write(folder))
    before = digest(env)
    err = refused(capsys, ["run", "--target", "local_cpu_llm", "--task", str(task)], env / "results")
    assert f"{task}: {key}: " in err and says in err, err
    assert digest(env) == before  # no user file touched, nothing written beside them (no results/ folder at all)


def test_a_good_language_model_task_passes_the_checks(tmp_path):
    """The checks refuse only what is wrong: the same task folder unedited passes them (and counts as prepare does)."""
    from search.flows.causal_lm.task import check_files, load_lm_task

    check_files(load_lm_task(str(write_lm_task(tmp_path, {}))))


STORAGE_CASES = [  # (--storage, what the one line says); SECRET never appears in it
    (f"postgresql://u:{SECRET}@127.0.0.1:abc/db", "not a valid URL"),
    (f"postgresql://u:{SECRET}@127.0.0.1:1/db", "cannot connect"),  # nothing listens on port 1
    ("postgresql://u@no-such-host.invalid/db", "cannot connect"),
    (f"postgresql://u:{SECRET[:4]}@{SECRET[4:]}@127.0.0.1/db", "percent-encode"),
    (f"mysql://u:{SECRET}@h/db", "give postgresql://"),
    ("sqlite:///{root}/notes.txt", "not an SQLite database"),
    ("sqlite:///{root}/missing/study.db", "does not exist"),
    ("journal:{root}/missing/journal.log", "does not exist"),
    ("journal:{root}", "names a folder"),
]


@pytest.mark.parametrize("url, says", STORAGE_CASES, ids=[s for _, s in STORAGE_CASES])
def test_a_bad_storage_is_refused_before_anything_loads(capsys, env, url, says):
    (env / "notes.txt").write_text("not a database\n" * 100)
    err = refused(capsys, ["run", "--storage", url.format(root=env), "--trials", "1"], env / "results")
    assert err.startswith("error: --storage: ") and says in err and SECRET not in err, err
    assert (env / "notes.txt").read_text() == "not a database\n" * 100


def test_the_password_is_removed_from_the_url_kept_on_disk():
    from search.storage import masked, redacted

    # SQLAlchemy 2's URL.set(password=None) leaves the password in place ("None" means unchanged)
    assert redacted(f"postgresql://u:{SECRET}@h:5432/db?sslmode=require") == "postgresql://u@h:5432/db?sslmode=require"
    assert redacted("postgresql+psycopg2://u:p%40ss@h/db") == "postgresql+psycopg2://u@h/db"
    assert redacted("postgresql://u@h/db") == "postgresql://u@h/db" and redacted(None) is None
    assert masked(f"x postgresql://u:{SECRET}@h/db y") == "x postgresql://u:***@h/db y"


def test_a_classification_task_on_a_language_model_target_says_so(capsys, env):
    err = refused(capsys, ["run", "--target", "raspberry_pi5_llm", "--task", "rotten_tomatoes"], env / "results")
    assert "raspberry_pi5_llm.yaml: device.runtime: llama.cpp (a language-model target)" in err
    assert "rotten_tomatoes is a classification task" in err and "no such task file" not in err


# -- a finished tiny run, damaged the ways a user's disk or hands damage it ----------------------------------------
ESTIMATED_TARGET = """name: tiny_pi
device: {latency: estimated, memory_mb: 4096, memory_bandwidth_gbps: 8, peak_tops: {fp32: 0.2, int8: 0.8}}
workload: {batch_size: 1, sequence_length: 16}
budget: {memory_mb: 4, p99_latency_ms: 5, accuracy_floor: {max_drop: 0.5}}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """results/src: a one-trial search on a spec-only target (~15 s), which meets its budget."""
    from conftest import run_search
    from test_replan import SPACE as TINY_SPACE

    root = tmp_path_factory.mktemp("finished")
    task = write_tiny_task(root / "task")
    (root / "space.yaml").write_text(TINY_SPACE)
    (root / "pi.yaml").write_text(ESTIMATED_TARGET)
    proc = run_search(root / "results", "run", "--target", str(root / "pi.yaml"), "--space", str(root / "space.yaml"),
                      "--task", str(task), "--trials", "1", "--threads", "1", "--run-id", "src")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return root


@pytest.fixture
def run_copy(finished, env):
    """A copy of the finished run in this test's own results folder (shared cache linked, not copied)."""
    results = env / "results"
    results.mkdir()
    shutil.copytree(finished / "results" / "src", results / "src")
    return results / "src"


def refused_in_place(capsys, argv: list[str], run: Path) -> str:
    """Exit 2 with one line; the run folder byte-for-byte as it was, and nothing new beside it or outside."""
    before, names = digest(run), sorted(p.name for p in run.parent.parent.iterdir())
    beside = sorted(p.name for p in run.parent.iterdir())
    code = cli.main(argv)
    out, err = capsys.readouterr()
    err = err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and not out.strip(), (out, err)
    assert digest(run) == before and sorted(p.name for p in run.parent.iterdir()) == beside
    assert sorted(p.name for p in run.parent.parent.iterdir()) == names
    return err


DAMAGE_CASES = [  # (file truncated, command): every command that reads the file back refuses in one line
    ("budget.json", "select"), ("budget.json", "report"), ("budget.json", "export"), ("budget.json", "replan"),
    ("budget.json", "resume"), ("selected.json", "report"), ("selected.json", "export"),
    ("teacher.json", "select"), ("teacher.json", "report"), ("teacher.json", "replan"), ("teacher.json", "resume"),
    ("run.json", "select"), ("run.json", "report"), ("run.json", "replan"), ("run.json", "resume"),
]
COMMANDS = {"select": ["select", "src"], "report": ["report", "src"], "export": ["export", "src", "--out", "ship"],
            "replan": ["replan", "src", "--target", "raspberry_pi5"], "resume": ["run", "--resume", "src"]}
FIXES = {"budget.json": "run --resume src` writes it again", "selected.json": "select src` to write it again",
         "teacher.json": "measures the teacher again", "run.json": "restore it from a copy"}


@pytest.mark.parametrize("name, command", DAMAGE_CASES, ids=[f"{n} {c}" for n, c in DAMAGE_CASES])
def test_a_damaged_run_file_is_one_line_naming_it(capsys, run_copy, name, command):
    path = run_copy / name
    path.write_bytes(path.read_bytes()[:20])  # truncated, as by a full disk or a killed copy
    err = refused_in_place(capsys, COMMANDS[command], run_copy)
    assert f"{path}: -: damaged (" in err and FIXES[name] in err, err
    assert not (run_copy.parent.parent / "ship").exists()


@pytest.mark.parametrize("blob, says", [(b"", "an empty file (0 bytes)"), (_noise(5000), "not an SQLite database")],
                         ids=["0-byte study.db", "random study.db"])
@pytest.mark.parametrize("command", ["select", "report"])
def test_a_damaged_study_db_is_blamed_on_the_file(capsys, run_copy, blob, says, command):
    (run_copy / "study.db").write_bytes(blob)
    err = refused_in_place(capsys, COMMANDS[command], run_copy)
    assert f"{run_copy / 'study.db'}: -: damaged: {says}" in err and "--storage" not in err, err


def test_a_worker_on_an_unreachable_storage_says_so_first(capsys, run_copy):
    saved = json.loads((run_copy / "run.json").read_text())
    (run_copy / "run.json").write_text(json.dumps({**saved, "storage": "postgresql://u@127.0.0.1:1/db"}))
    err = refused_in_place(capsys, ["worker", "src"], run_copy)  # no progress lines, no worker id claimed
    assert f"{run_copy / 'run.json'}: storage: postgresql://u@127.0.0.1:1/db: cannot connect" in err, err


def test_report_out_follows_exports_rules(capsys, run_copy, env, monkeypatch):
    mine = env / "afile.txt"
    mine.write_text("keep me")
    assert "afile.txt: --out: exists; give a new file, or --force" in refused_in_place(
        capsys, ["report", "src", "--out", "afile.txt"], run_copy)
    assert mine.read_text() == "keep me"
    assert "--out: is a folder" in refused_in_place(capsys, ["report", "src", "--out", str(env)], run_copy)
    err = refused_in_place(capsys, ["report", "src", "--out", "missing/x.html"], run_copy)
    assert "missing/x.html: --out: folder missing does not exist" in err

    def fail(path, text):  # what a read-only folder or a full disk does to the temporary file beside --out
        raise PermissionError(13, "Permission denied", str(path.with_name(f".{path.name}.123.tmp")))

    with monkeypatch.context() as m:
        m.setattr("search.report.atomic_write_text", fail)
        err = refused_in_place(capsys, ["report", "src", "--out", "new.html"], run_copy)
    assert "new.html: --out: cannot write there (Permission denied)" in err and ".tmp" not in err, err
    assert cli.main(["report", "src", "--out", "afile.txt", "--force"]) == 0
    assert mine.read_text().startswith("<!DOCTYPE html>")


def test_export_force_replaces_exactly_its_own_files(capsys, run_copy, env):
    ship = env / "ship"
    (ship / "hf").mkdir(parents=True)
    (ship / "keep.txt").write_text("mine")
    (ship / "hf" / "mine.txt").write_text("mine too")
    (ship / "hf" / "config.json").write_text("{}")  # a name export writes: replaced
    assert cli.main(["export", "src", "--out", str(ship), "--force"]) == 0
    capsys.readouterr()
    assert (ship / "keep.txt").read_text() == "mine" and (ship / "hf" / "mine.txt").read_text() == "mine too"
    assert json.loads((ship / "hf" / "config.json").read_text())["model_type"] == "bert"
    assert (ship / "model.onnx").is_file() and not [p for p in ship.iterdir() if p.name.startswith(".")]
    # a folder of the user's where export writes a file: refused before anything is replaced
    (ship / "DEPLOY.md").unlink()
    (ship / "DEPLOY.md").mkdir()
    (ship / "DEPLOY.md" / "notes.txt").write_text("mine")
    before = digest(ship)
    err = refused_in_place(capsys, ["export", "src", "--out", str(ship), "--force"], run_copy)
    assert f"{ship / 'DEPLOY.md'}: --out: is a folder where export writes a file" in err
    assert digest(ship) == before and not [p for p in ship.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("given", ["../outside/src", "{root}/outside/src"], ids=["relative", "absolute"])
def test_replan_of_a_run_outside_results_writes_only_under_results(run_copy, env, given, monkeypatch):
    outside = env / "outside"
    shutil.move(run_copy, outside / "src")
    (env / "work").mkdir()
    monkeypatch.chdir(env / "work")
    before = digest(outside)
    assert cli.main(["replan", given.format(root=env), "--target", "raspberry_pi5"]) in (0, 3)
    assert digest(outside) == before and sorted(p.name for p in outside.iterdir()) == ["src"]
    assert (env / "results" / "src.replan-raspberry_pi5_8gb" / "selected.json").is_file()
    assert sorted(p.name for p in env.iterdir()) == ["outside", "results", "work"] and not any((env / "work").iterdir())


def test_no_password_given_in_storage_reaches_the_results_folder(postgres, finished, tmp_path):  # noqa: F811
    """A real run on PostgreSQL (trust auth: the password is accepted and ignored) with a password in the URL:
    run.json keeps the URL without it, and no file under the results folder, nor the output, holds it."""
    from conftest import run_search

    url = postgres.replace("postgres@", f"postgres:{SECRET}@")
    results = finished / "results"  # the fine-tuned teacher is cached there
    proc = run_search(results, "run", "--storage", url, "--target", str(finished / "pi.yaml"), "--space",
                      str(finished / "space.yaml"), "--task", str(finished / "task" / "task.yaml"), "--trials", "1",
                      "--threads", "1", "--run-id", "pw")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert json.loads((results / "pw" / "run.json").read_text())["storage"] == postgres
    leaks = [p for p in results.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaks and SECRET not in proc.stdout + proc.stderr, leaks


def test_onnxruntime_keeps_no_telemetry_store_under_home(tmp_path):
    """onnxruntime >= 1.29 writes ~/.cache/Microsoft/DeveloperTools/.onnxruntime/ unless ORT_DISABLE_TELEMETRY is
    set; `python -m search` sets it before onnxruntime loads."""
    import os
    import subprocess
    import sys

    code = ("import search.__main__, numpy, onnx, onnxruntime as ort\nfrom onnx import helper, TensorProto as T\n"
            "g = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g', "
            "[helper.make_tensor_value_info('x', T.FLOAT, [1])], [helper.make_tensor_value_info('y', T.FLOAT, [1])])\n"
            "m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])\n"
            "ort.InferenceSession(m.SerializeToString()).run(None, {'x': numpy.ones(1, numpy.float32)})\n")
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    proc = subprocess.run([sys.executable, "-c", code], env={**env, "HOME": str(tmp_path), "XDG_CACHE_HOME": ""},
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not list(tmp_path.rglob("*")), list(tmp_path.rglob("*"))


def test_the_gguf_header_check_reads_what_llama_cpp_would_need(tmp_path):
    """The `gguf` reader's check behind the llama.cpp one: a GGUF without the keys the run reads, and one whose
    tensor data is cut short (a header that parses, a file that ends early), are refused in one line."""
    import gguf

    from search.inputs import read_gguf

    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_tensor("w", np.ones((64, 64), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert read_gguf(path, "task.yaml", "teacher", ("{arch}.block_count",))["llama.block_count"] == 2
    with pytest.raises(ConfigError, match=r"^task.yaml: teacher: .*has no 'llama.feed_forward_length' in its header"):
        read_gguf(path, "task.yaml", "teacher", ("{arch}.feed_forward_length",))
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:-4096])
    with pytest.raises(ConfigError, match=r"is not a readable GGUF \((truncated: its tensors need|damaged or trunc)"):
        read_gguf(cut, "task.yaml", "teacher")


@pytest.mark.parametrize("suffix", [".txt", ".csv"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_text_reader_fuzzed(tmp_path, suffix, blob):
    """Whatever bytes a calibration or evaluation file holds: text, or one ConfigError line naming the task file."""
    from search.inputs import read_text

    path = tmp_path / f"t{suffix}"
    path.write_bytes(blob)
    try:
        text = read_text(path, "text", "task.yaml", "data.evaluation")
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("task.yaml: data.")
        return
    assert text.strip() and "\0" not in text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=200) | st.text(max_size=120).map(str.encode))
def test_run_file_reader_fuzzed(tmp_path, blob):
    """A run folder's JSON file, however damaged: a mapping, or one line naming it and what writes it again."""
    from search.run_dir import read_json

    path = tmp_path / "budget.json"
    path.write_bytes(blob)
    try:
        assert isinstance(read_json(path, ("artifact_name",)), dict)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"{path}: -: ") and "restore it" in str(exc)

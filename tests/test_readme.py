"""README.md stays short and true: every shell command in its code blocks that runs here in under a minute is run and
must exit 0 (the rest are named in NOT_RUN, with why); its YAML examples are read by the loaders the CLI uses; it
has no dates, commit hashes or history, and "Your model, your data, your device" starts in its first screenful."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from search.errors import ConfigError
from search.space import load_space
from search.target import load_target
from search.tasks import load_task

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# commands not run here, by prefix, and why
NOT_RUN = {
    "make demo": "sets up .venv and runs the demo search (minutes); .ci/run checks it through make test-slow",
    "make test": "the whole suite; this test is part of it",
    "python -m search run --task my_task.yaml": "needs the reader's own teacher and data",
    "python -m search run --target local_cpu_llm": "a language-model search (minutes)",
    "python -m search select <run-id>": "needs a finished run",
    "python -m search export <run-id>": "needs a finished run",
    "python -m search replan <run-id>": "needs a finished run",
    "python -m search report <run-id>": "needs a finished run",
    "python -m search run --resume <run-id>": "needs a finished run",
}


def text() -> str:
    return README.read_text()


def shell_commands() -> list[str]:
    """Lines of the README's plain and shell code blocks (YAML blocks are files, not commands), comments cut."""
    out = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", text(), re.S):
        if lang in ("", "bash", "sh", "shell"):
            out += [line.split("  #")[0].strip() for line in body.splitlines() if line.strip()]
    return out


def skipped(command: str) -> str | None:
    return next((why for prefix, why in NOT_RUN.items() if command.startswith(prefix)), None)


def runnable() -> list[str]:
    return [c for c in shell_commands() if not skipped(c)]


def test_every_command_is_run_or_listed():
    commands = shell_commands()
    assert any(c == "make demo" for c in commands) and any(c == "make test" for c in commands)
    assert commands[:2] == ["make demo", "make test"], "the fresh-machine commands come first"
    for c in commands:
        assert c.startswith(("python -m search", "make ")), f"a README command this test cannot run: {c}"
    assert len(runnable()) >= 8, runnable()


@pytest.mark.parametrize("command", runnable())
def test_readme_command_succeeds(command):
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip()


def test_readme_yaml_examples_are_read_by_the_loaders(tmp_path):
    task, target, space = re.findall(r"```yaml\n(.*?)```", text(), re.S)
    (tmp_path / "target.yaml").write_text(target)
    (tmp_path / "space.yaml").write_text(space)
    (tmp_path / "task.yaml").write_text(task)
    assert load_target(str(tmp_path / "target.yaml")).budget.p99_latency_ms > 0
    assert load_space(str(tmp_path / "space.yaml")).knobs
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "reviews.csv").write_text("text,label\n")
    with pytest.raises(ConfigError, match="teacher: .* has no config.json"):  # every key accepted; no model here
        load_task(str(tmp_path / "task.yaml"))


def test_readme_is_short_and_has_no_history():
    t = text()
    lines = t.splitlines()
    assert len(lines) <= 200, len(lines)
    own = next(i for i, line in enumerate(lines) if line.startswith("## Your model, your data, your device"))
    assert own < 60, own
    assert not re.findall(r"\b[0-9a-f]{7,40}\b", t), "a commit hash"
    months = "January|February|March|April|May|June|July|August|September|October|November|December"
    assert not re.findall(rf"\b(19|20)\d\d-\d\d\b|\b({months}) \d{{4}}\b|\b\d{{1,2}} ({months})\b", t), "a date"
    for word in ("session", "History", "Tried and dropped", "Last run", "Measured here"):
        assert word not in t, word
    for link in re.findall(r"\]\((docs/[\w.-]+\.md)", t):
        assert (ROOT / link).is_file(), link

"""The run folder's layout, in one place, and atomic writes: every file is written under a temporary
name in the same folder and renamed, so a crash leaves the old complete file or the new one."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

STUDY_NAME = "search"


def atomic_write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def atomic_write_json(path: Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def atomic_replace_dir(fill, dst: Path) -> Path:
    """Build a folder with `fill(tmp_dir)` beside `dst`, then swap it in (the old one is removed only
    after the new one is complete)."""
    tmp, old = dst.with_name(f".{dst.name}.tmp"), dst.with_name(f".{dst.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    fill(tmp)
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
    tmp.rename(dst)
    shutil.rmtree(old, ignore_errors=True)
    return dst


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def study_db(self) -> Path:
        return self.root / "study.db"

    @property
    def study_url(self) -> str:
        return f"sqlite:///{self.study_db}"

    run_json = property(lambda self: self.root / "run.json")
    teacher_json = property(lambda self: self.root / "teacher.json")
    budget_json = property(lambda self: self.root / "budget.json")
    selected_json = property(lambda self: self.root / "selected.json")
    dashboard = property(lambda self: self.root / "dashboard.html")
    trials_csv = property(lambda self: self.root / "trials.csv")
    pareto_csv = property(lambda self: self.root / "pareto.csv")
    tokenizer_dir = property(lambda self: self.root / "tokenizer")
    model_dir = property(lambda self: self.root / "model")
    teacher_dir = property(lambda self: self.root / "teacher")

    def trial_dir(self, trial: int) -> Path:
        return self.root / "trials" / f"{trial:04d}"

    def artifact(self, trial: int) -> Path:
        """The artifact a trial built (its file name is the backend's, recorded in budget.json)."""
        return self.trial_dir(trial) / self.saved()["artifact_name"]

    def saved(self) -> dict:
        return json.loads(self.budget_json.read_text())

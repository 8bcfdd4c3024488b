"""The run folder's layout, in one place, and atomic writes: every file is written under a temporary
name in the same folder and renamed, so a crash leaves the old complete file or the new one."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

STUDY_NAME = "search"
PREDICTIONS = "predictions.npy"  # beside a measured artifact: its predicted label per validation example


# what writes each file of a run folder again, for the one line that says it is damaged
_REWRITE = {
    "run.json": "restore it from a copy (it holds the run's inputs and study storage)",
    "budget.json": "restore it, or delete it and `python -m search run --resume {run}` writes it again",
    "teacher.json": "restore it, or delete it and `python -m search run --resume {run}` measures the teacher again",
    "selected.json": "run `python -m search select {run}` to write it again, or restore it",
    ".finished": "delete it (the last worker's marker; `python -m search select {run}` selects again)",
}
_MISSING = object()


def read_json(path: Path, keys: tuple[str, ...] = (), default=_MISSING, mapping: bool = True):
    """A JSON file of a run folder, read back: damage (truncated, not JSON, not a mapping where `mapping`, a key in
    `keys` missing) is one line naming the file and what writes it again, never a traceback. `default`: what a
    missing file means (else missing is damage too)."""
    fix = _REWRITE.get(path.name, "restore it").format(run=path.parent.name)
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        if default is not _MISSING:
            return default
        raise ConfigError(path, "-", f"missing; {fix}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ConfigError(path, "-", f"damaged ({exc}); {fix}") from None
    except OSError as exc:
        raise ConfigError(path, "-", f"cannot read it ({exc.strerror or exc}); fix its permissions") from None
    if mapping and (not isinstance(data, dict) or any(k not in data for k in keys)):
        what = "not a JSON object" if not isinstance(data, dict) else \
            f"no {next(k for k in keys if k not in data)!r}"
        raise ConfigError(path, "-", f"damaged ({what}); {fix}")
    return data


def read_npy(path: Path):
    """An array of a run folder (labels, a trial's predictions), read back; damage is one line."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ConfigError(path, "-", f"damaged ({exc}); restore it from a copy") from None


def _tag() -> str:
    """Unique per writer: workers in containers on one shared folder can have the same pid."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{_tag()}.tmp")  # per writer: workers may write the same file
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_npy(path: Path, array) -> Path:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_write_json(path: Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def atomic_replace_dir(fill, dst: Path) -> Path:
    """Build a folder with `fill(tmp_dir)` beside `dst`, then swap it in (the old one is removed only
    after the new one is complete)."""
    tag = _tag()  # per writer: two workers may replace the same folder
    tmp, old = dst.with_name(f".{dst.name}.{tag}.tmp"), dst.with_name(f".{dst.name}.{tag}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        try:
            dst.rename(old)
        except FileNotFoundError:  # another worker swapped it away at the same moment
            pass
    try:
        tmp.rename(dst)
    except OSError:  # another worker put its identical copy there first
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return dst


class JsonCache:
    """A small JSON file of measured values keyed by name, rewritten atomically after each `put`: an interrupted
    bench or run keeps what it measured, and a re-run measures only what is new. Reused entries that are dicts
    say so in their `measured` field."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, key: str):
        hit = self.data.get(key)
        return None if hit is None else ({**hit, "measured": "earlier run"} if isinstance(hit, dict) else hit)

    def put(self, key: str, value):
        self.data[key] = value
        atomic_write_json(self.path, self.data)
        return value


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

    labels = property(lambda self: self.root / "labels.npy")  # the validation labels, in evaluation order
    slices = property(lambda self: self.root / "slices.npy")  # each validation example's slice, in that order
    teacher_predictions = property(lambda self: self.teacher_dir / PREDICTIONS)

    def predictions(self, trial: int) -> Path:
        """A classification trial's predicted label per validation example (the paired accuracy bound)."""
        return self.trial_dir(trial) / PREDICTIONS

    def trial_dir(self, trial: int) -> Path:
        return self.root / "trials" / f"{trial:04d}"

    def artifact(self, trial: int) -> Path:
        """The artifact a trial built (its file name is the backend's, recorded in budget.json); a trial that
        reused an earlier identical recipe holds a linked copy of that one's files."""
        return self.trial_dir(trial) / self.saved()["artifact_name"]

    def saved(self) -> dict:
        return read_json(self.budget_json, ("artifact_name",))


@contextmanager
def removed_if_refused(root: Path, created: bool):
    """A run folder this process created is removed again when the run is refused (ConfigError) before its first
    trial made anything: a refused run leaves nothing behind. A folder that holds trials is never removed."""
    try:
        yield
    except ConfigError:
        if created and not (root / "trials").exists():
            shutil.rmtree(root, ignore_errors=True)
        raise


def claim_worker_id(rd: RunDir) -> int:
    """The next free worker number of a run: created with O_EXCL in the shared run folder, so two workers
    starting at once never get the same one."""
    folder = rd.root / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        try:
            os.close(os.open(folder / str(n), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return n
        except FileExistsError:
            n += 1


def link_file(src: Path, dst: Path) -> None:
    """A hard link where the file system allows (no extra bytes), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def link_copy(src: Path, dst: Path) -> None:
    """Copy a trial folder by hard links where the file system allows, else by copying."""
    shutil.copytree(src, dst, copy_function=link_file, dirs_exist_ok=True)

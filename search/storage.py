"""Where a run's study lives: by default an SQLite file in the run folder; `--storage postgresql://...` (or
`journal:/shared/path.log`, Optuna's journal file for a shared file system) for many workers on one study.

RDB storages get Optuna's heartbeat: a trial whose worker died (SIGKILL, a lost machine) is failed by the next
worker after the grace period, and RetryHeartbeatStaleTrialCallback enqueues its recipe once more. PostgreSQL
goes through psycopg 3 (SQLAlchemy 2.1's default driver for postgresql://)."""
from __future__ import annotations

import optuna

from .errors import ConfigError
from .run_dir import STUDY_NAME, RunDir

HEARTBEAT_S, GRACE_S = 10, 40


def check_url(url: str | None) -> str | None:
    if url is None or url.startswith(("postgresql://", "postgresql+psycopg2://", "sqlite:///", "journal:")):
        return url
    raise ConfigError("--storage", url, "give postgresql://user@host:port/db, sqlite:///path.db or "
                                        "journal:/shared/path.log")


def redacted(url: str | None) -> str | None:
    """The URL without its password (workers take it from PGPASSWORD or ~/.pgpass)."""
    if url is None or "://" not in url or url.startswith("sqlite"):
        return url
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return u.set(password=None).render_as_string(hide_password=False) if u.password else url


def study_name(rd: RunDir, url: str | None) -> str:
    """One study per run: the run id names it in a shared database (a per-run SQLite file keeps `search`)."""
    return STUDY_NAME if url is None else rd.name


def make(url: str | None, rd: RunDir):
    if url is None:
        url = rd.study_url
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url[len("journal:"):]))
    try:
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
    except Exception as exc:  # sqlalchemy/driver errors: unreachable server, bad credentials, no database
        raise ConfigError("--storage", url.split("@")[-1], f"cannot open the study storage "
                                                           f"({str(exc).splitlines()[0][:160]})") from None


def load(rd: RunDir):
    """The study of a finished or running run, from the storage its run.json names."""
    import json

    url = json.loads(rd.run_json.read_text()).get("storage") if rd.run_json.is_file() else None
    return optuna.load_study(study_name=study_name(rd, url), storage=make(url, rd))

"""Where a run's study lives: by default an SQLite file in the run folder; `--storage postgresql://...` (or
`journal:/shared/path.log`, Optuna's journal file for a shared file system) for many workers on one study.

RDB storages get Optuna's heartbeat: a trial whose worker died (SIGKILL, a lost machine) is failed by the next
worker after the grace period, and RetryHeartbeatStaleTrialCallback enqueues its recipe once more. PostgreSQL
goes through psycopg 3 (SQLAlchemy 2.1's default driver for postgresql://)."""
from __future__ import annotations

import os

import optuna

from .errors import ConfigError
from .run_dir import STUDY_NAME, RunDir

HEARTBEAT_S, GRACE_S = 10, 40


SCHEMES = ("postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://", "sqlite:///", "journal:")
CONNECT_TIMEOUT_S = 5  # an unreachable server is said within seconds, not after a TCP timeout of minutes


def _url(url: str, named_in: str | None = None):
    """SQLAlchemy's parse of an RDB URL; a malformed one (a port that is not a number, ...) is a --storage error
    whose message never holds the password."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
        u.port  # noqa: B018  parsed lazily: "abc" fails here, not in make_url
    except Exception as exc:  # ArgumentError, ValueError: all mean "not a URL we can use"
        raise _refused(named_in, masked(url), f"not a valid URL ({type(exc).__name__}: "
                                              f"{masked(str(exc).splitlines()[0])[:120]}); give "
                                              "postgresql://user@host:port/db") from None
    if "@" in (u.host or ""):  # an unescaped @ in the password: part of it would be taken for the host
        raise _refused(named_in, masked(url), "holds an @ after the user name; percent-encode an @ in the password "
                                              "as %40")
    return u


def masked(text: str) -> str:
    """Any `scheme://user:password@` in `text` with the password replaced by ***, for messages; done on the text
    (not through make_url), so that a URL SQLAlchemy cannot parse is masked too."""
    import re

    return re.sub(r"(://[^:/@\s]*):\S*@", r"\1:***@", text)  # to the last @: a password may hold one


def _refused(named_in: str | None, shown: str, message: str) -> ConfigError:
    """A storage the user named cannot be used: said of --storage, or of the run.json it was read from (a worker,
    `--resume`, select); `shown` never holds a password."""
    if named_in is None:
        return ConfigError("--storage", shown, message)
    return ConfigError(named_in, "storage", f"{shown}: {message}")


def check_url(url: str | None, named_in: str | None = None) -> str | None:
    if url is None:
        return url
    if not url.startswith(SCHEMES):
        raise _refused(named_in, masked(url), "give postgresql://user@host:port/db, sqlite:///path.db or "
                                              "journal:/shared/path.log")
    if "://" in url:
        _url(url, named_in)
    return url


def redacted(url: str | None) -> str | None:
    """The URL without its password (workers take it from PGPASSWORD or ~/.pgpass). In SQLAlchemy 2,
    `URL.set(password=None)` leaves the password as it was (None means "unchanged"): the URL is built anew."""
    if url is None or "://" not in url or url.startswith("sqlite"):
        return url
    from sqlalchemy.engine import URL

    u = _url(url)
    if u.password is None:
        return url
    return URL.create(u.drivername, username=u.username, host=u.host, port=u.port, database=u.database,
                      query=u.query).render_as_string(hide_password=False)


def check_reachable(url: str | None, named_in: str | None = None) -> None:
    """Before anything is loaded or created: the storage a run names can be opened (a server that answers, an
    SQLite file that is a database, a journal folder that exists). One line naming --storage and the fix."""
    if url is None:
        return
    from pathlib import Path

    if url.startswith("journal:"):
        path = Path(url[len("journal:"):])
        if not str(path) or path.is_dir():
            raise _refused(named_in, url, "names a folder; give journal:/shared/folder/file.log")
        if not path.parent.is_dir():
            raise _refused(named_in, url, f"folder {path.parent} does not exist; create it (on the file "
                                                "system every worker shares) or give another path")
        if path.exists() and not os.access(path, os.R_OK | os.W_OK) or not os.access(path.parent, os.W_OK):
            raise _refused(named_in, url, "cannot write the journal there (permission denied); fix its "
                                                "permissions or give another path")
        return
    if url.startswith("sqlite"):
        path = Path(_url(url, named_in).database or "")
        if not path.parent.is_dir():
            raise _refused(named_in, url, f"folder {path.parent} does not exist; create it or give another path")
        if path.exists():
            problem = sqlite_problem(path, study=False)
            if problem:
                raise _refused(named_in, url, f"{problem}; give a new file or an SQLite database")
        return
    import sqlalchemy

    where = _url(url, named_in).render_as_string(hide_password=True)
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # the driver's many kinds (no host, refused, bad credentials, no database)
        first = masked(" ".join(str(getattr(exc, "orig", None) or exc).split()))[:200]
        other = ", or leave --storage out (SQLite in the run folder)" if named_in is None else ""
        raise _refused(named_in, where, f"cannot connect ({first}); start the server or fix the host, port, user "
                                        f"or database{other}") from None


def sqlite_problem(path, study: bool = True) -> str | None:
    """Why an existing file cannot hold the study (not a database; with `study`, also empty or without Optuna's
    tables), read-only: nothing is created in it. None when it can."""
    import sqlite3
    from contextlib import closing

    if study and path.stat().st_size == 0:
        return "an empty file (0 bytes), not an Optuna study"
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        return f"not an SQLite database ({exc})"
    return "an SQLite database without an Optuna study" if study and "studies" not in tables else None


def study_name(rd: RunDir, url: str | None) -> str:
    """One study per run: the run id names it in a shared database (a per-run SQLite file keeps `search`)."""
    return STUDY_NAME if url is None else rd.name


def make(url: str | None, rd: RunDir, named_in: str | None = None):
    """The study storage. No URL: the run folder's own SQLite file. `named_in`: the run.json the URL was read
    from (else it came from --storage), so that the one line when it cannot be opened names what the user gave."""
    own = url is None
    if own:
        url = rd.study_url
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            return JournalStorage(JournalFileBackend(url[len("journal:"):]))
        except Exception as exc:  # not a journal, unreadable
            raise _refused(named_in, url, f"cannot open the journal ({str(exc).splitlines()[0][:160]}); give "
                                           "journal:/shared/path.log of a run, or a new file") from None
    engine = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}} if url.startswith("postgresql") else {}
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
    except Exception as exc:  # sqlalchemy/driver errors: unreachable server, bad credentials, no database
        first = masked(str(getattr(exc, "orig", None) or exc).splitlines()[0][:160])
        if own:  # the run folder's own file, not a flag the user gave
            raise ConfigError(rd.study_db, "-", f"cannot open it ({first}); restore it from a copy") from None
        raise _refused(named_in, url.split("@")[-1], f"cannot open the study storage ({first}); start the server "
                                                     "or fix the URL") from None


def load(rd: RunDir):
    """The study of a finished or running run, from the storage its run.json names."""
    from .run_dir import read_json

    url = read_json(rd.run_json, default={}).get("storage")
    if url is None and rd.study_db.is_file():  # read-only first: opening an empty file would create tables in it
        problem = sqlite_problem(rd.study_db)
        if problem:
            raise ConfigError(rd.study_db, "-", f"damaged: {problem}; restore it from a copy")
    try:
        return optuna.load_study(study_name=study_name(rd, url), storage=make(url, rd, str(rd.run_json)))
    except KeyError:  # the storage holds no study of this run
        where, key = (rd.study_db, "-") if url is None else (rd.run_json, "storage")
        raise ConfigError(where, key, f"holds no study named {study_name(rd, url)!r}; restore the run's "
                                      "storage, or check that this is the run's folder") from None

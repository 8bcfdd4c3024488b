"""A small strict reader for YAML mappings: every key checked once, unknown keys rejected.

Written by hand (not pydantic/jsonschema) because every error must be one line in our
`file: key: given; allowed` form, and the cross-field rules live beside the reads.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

REQUIRED = object()
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # 1e-3, 2.5E+2


def resolve(name_or_path: str, directory: Path) -> Path:
    """A path as given, or a bare name looked up in `directory` (with or without .yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (directory / name_or_path, directory / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    return path  # load_yaml reports it missing


def load_yaml(path: Path, what: str) -> dict:
    """Read a YAML mapping with safe_load; missing file and syntax errors become ConfigError."""
    if not path.is_file():
        raise ConfigError(path, "-", f"no such {what} file; give an existing path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(path, "-", f"not a UTF-8 text file; give a YAML {what} file") from None
    except OSError as exc:
        raise ConfigError(path, "-", f"cannot read it ({exc.strerror}); check the path and its permissions") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "-"
        raise ConfigError(path, where, f"malformed YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(path, "-", f"expected a mapping at top level, got {type(data).__name__}")
    return data


class Reader:
    """Reads keys of one mapping; `done()` rejects the keys nobody read."""

    def __init__(self, file: Path | str, data: Any, prefix: str = ""):
        self.file, self.prefix = file, prefix
        if not isinstance(data, dict):
            raise ConfigError(file, prefix or "-", f"expected a mapping, got {data!r}")
        self.data, self.seen = data, set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = REQUIRED) -> Any:
        self.seen.add(name)
        if name not in self.data or self.data[name] is None:
            if default is REQUIRED:
                raise self.error(name, "missing; this key is required")
            return default
        return self.data[name]

    def number(self, name: str, default: Any = REQUIRED, lo: float | None = None, hi: float | None = None,
               integer: bool = False, lo_open: bool = False) -> Any:
        value = self.raw(name, default)
        if value is None:
            return None
        kind = "an integer" if integer else "a number"
        if isinstance(value, str) and not integer and _SCIENTIFIC.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 (PyYAML) reads 1e-3 as a string; it is the number the user meant
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            raise self.error(name, f"got {value!r}; expected {kind}")
        if not math.isfinite(value):
            raise self.error(name, f"got {value!r}; expected a finite number")
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise self.error(name, f"got {value}; must be {'>' if lo_open else '>='} {lo}")
        if hi is not None and value > hi:
            raise self.error(name, f"got {value}; must be <= {hi}")
        return int(value) if integer else float(value)

    def string(self, name: str, default: Any = REQUIRED, choices: tuple[str, ...] | None = None) -> Any:
        value = self.raw(name, default)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(name, f"got {value!r}; expected a string")
        if choices is not None and value not in choices:
            raise self.error(name, f"got {value!r}; allowed: {', '.join(choices)}")
        return value

    def section(self, name: str, default: Any = REQUIRED) -> "Reader":
        value = self.raw(name, {} if default is not REQUIRED else REQUIRED)
        return Reader(self.file, value, self.key(name))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen, key=str)
        if unknown:
            known = ", ".join(sorted(self.seen)) or "none"
            raise self.error(str(unknown[0]), f"unknown key; allowed here: {known}")


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def slug(name: str) -> str:
    """A run name from free text (a target's `name`): one path component of safe characters."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"
    return out[:100]


def check_run_id(run_id: str, key: str = "--run-id") -> str:
    """Run ids are one path component of safe characters: never `..`, `/`, or an absolute path."""
    if not SAFE_NAME.fullmatch(run_id) or run_id in (".", ".."):
        raise ConfigError(key, run_id, "a run id is one folder name of letters, digits, '.', '_' and '-' "
                                       "(no '/', no '..', at most 100 characters); pick another")
    return run_id


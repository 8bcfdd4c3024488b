"""Up-front checks of the files a task names, made before anything is loaded, trained or created: each file is
readable and of the kind its key says (a GGUF by its header, a Hugging Face directory by its config.json and its
safetensors headers, text that decodes, a CSV that parses and has the column). A failure is one ConfigError line
naming the task file, the key and the fix. The readers here are also the ones the run uses later, so what was
checked is what is read."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import ConfigError


def _first_line(exc: BaseException) -> str:
    return " ".join((str(exc).splitlines() or [type(exc).__name__])[0].split())[:200]


def read_config_json(folder: Path, file_for_errors, key: str) -> dict:
    """A Hugging Face directory's config.json as a mapping."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(file_for_errors, key, f"{folder} has no config.json; give a Hugging Face model "
                                                "directory or a .gguf file") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ConfigError(file_for_errors, key, f"{path} is not valid JSON ({_first_line(exc)}); fix or "
                                                "replace it") from None
    except OSError as exc:
        raise ConfigError(file_for_errors, key, f"cannot read {path} ({exc.strerror or exc}); check its "
                                                "permissions") from None
    if not isinstance(config, dict):
        raise ConfigError(file_for_errors, key, f"{path} is not a JSON object; fix or replace it")
    return config


def check_safetensors(folder: Path, file_for_errors, key: str) -> None:
    """Every *.safetensors file of a directory has a readable header (the tensors are not read)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ConfigError(file_for_errors, key, f"{folder} has no .safetensors weights; convert the checkpoint")
    for f in files:
        try:
            with safe_open(str(f), framework="np") as handle:
                handle.keys()
        except Exception as exc:  # SafetensorError, OSError: a damaged or truncated file
            raise ConfigError(file_for_errors, key, f"{f} is not a readable safetensors file "
                                                    f"({_first_line(exc)}); replace it") from None


def read_gguf(path: Path, file_for_errors, key: str, needs: tuple[str, ...] = ()) -> dict:
    """A GGUF's header fields, checked by the `gguf` package's reader (magic, version, metadata, tensor infos)
    and against the file's size (a truncated file lacks the end of its tensor data). `needs`: keys the caller
    reads ({arch} stands for general.architecture's value). Returns {key: value} of the scalar and string
    fields (arrays as `...`), read once per file version."""
    if not path.is_file():
        raise ConfigError(file_for_errors, key, f"{path} does not exist; give a .gguf file")
    stat = path.stat()
    fields = _GGUF_FIELDS.get((str(path.resolve()), stat.st_mtime_ns, stat.st_size))
    if fields is None:
        fields = _gguf_fields(path, stat.st_size, file_for_errors, key)
        _GGUF_FIELDS[(str(path.resolve()), stat.st_mtime_ns, stat.st_size)] = fields
    arch = fields.get("general.architecture")
    for need in needs:
        name = need.format(arch=arch)
        if name not in fields:
            raise ConfigError(file_for_errors, key, f"{path} has no {name!r} in its header; give a GGUF of a "
                                                    "llama-architecture model with its tokenizer")
    return fields


# (path, mtime, size) -> scalar fields: the reader takes ~2 s on SmolLM2's 49k-token vocabulary (timed for issue 36,
# not by a bench)
_GGUF_FIELDS: dict = {}


def not_gguf(path: Path, file_for_errors, key: str, why: str) -> ConfigError:
    """The one line for a GGUF that llama.cpp could not open, said without the reader's ~2 s parse: empty, not
    GGUF at all (the magic `gguf` defines), or damaged/truncated past its first bytes."""
    from gguf import GGUF_MAGIC

    with open(path, "rb") as f:
        head = f.read(4)
    what = ("an empty file (0 bytes)" if not head else
            "not a GGUF file: it does not start with GGUF's magic bytes" if int.from_bytes(head.ljust(4, b"\0"),
                                                                                          "little") != GGUF_MAGIC
            else f"damaged or truncated: {why}")
    return ConfigError(file_for_errors, key, f"{path} is not a readable GGUF ({what}); give a complete .gguf file")


def _gguf_fields(path: Path, size: int, file_for_errors, key: str) -> dict:
    from gguf import GGUFReader

    what = "an empty file (0 bytes)" if size == 0 else None
    if what is None:
        try:
            reader = GGUFReader(path)
            end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
            if end > size:
                what = f"truncated: its tensors need {end} bytes, the file has {size}"
        except Exception as exc:  # the reader raises ValueError, IndexError, struct errors on damaged files
            what = "not a GGUF file: it does not start with GGUF's magic bytes" if "magic" in str(exc) else \
                f"damaged or truncated: {_first_line(exc)}"
    if what is not None:
        raise ConfigError(file_for_errors, key, f"{path} is not a readable GGUF ({what}); give a complete .gguf "
                                                "file")
    # scalars and strings by value; arrays (the vocabulary) only as present: their contents are not needed here
    return {name: field.contents() if len(field.data) == 1 else ... for name, field in reader.fields.items()}


def read_text(path: Path, column: str, file_for_errors, key: str) -> str:
    """A .txt file (UTF-8), or one column of a CSV (parsed by pandas) joined by blank lines; refused when it is
    missing, binary, not UTF-8, not a CSV, lacks the column, or holds no text."""
    import io

    if not path.is_file():
        raise ConfigError(file_for_errors, key, f"{path} does not exist; give a .txt file or a CSV with a text column")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(file_for_errors, key, f"cannot read {path} ({exc.strerror or exc}); check its "
                                                "permissions") from None
    kind = path.suffix.lower()
    if kind == ".gz":  # e.g. Debian's /usr/share texts
        import gzip
        import zlib

        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ConfigError(file_for_errors, key, f"{path} is not a readable gzip file ({exc}); give it whole, "
                                                    "or unpacked") from None
        kind = Path(path.stem).suffix.lower()  # what it holds: name.txt or name.csv
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(file_for_errors, key, f"{path} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset "
                                                f"{exc.start}); give a UTF-8 .txt or .csv file") from None
    if "\x00" in text:  # valid UTF-8 can still be binary
        raise ConfigError(file_for_errors, key, f"{path} is binary (it holds NUL bytes); give a UTF-8 .txt or .csv "
                                                "file")
    if kind == ".csv":
        import pandas as pd

        try:
            frame = pd.read_csv(io.StringIO(text))
        except pd.errors.EmptyDataError:
            raise ConfigError(file_for_errors, key, f"{path} is empty; give a CSV with a header row and a "
                                                    f"{column!r} column") from None
        except (pd.errors.ParserError, ValueError) as exc:
            raise ConfigError(file_for_errors, key, f"{path} is not a well-formed CSV ({_first_line(exc)}); "
                                                    "fix its quoting or give a .txt file") from None
        if column not in frame.columns:
            raise ConfigError(file_for_errors, "data.text_column", f"column {column!r} not in {path.name} "
                                                                   f"({key}); columns are "
                                                                   f"{', '.join(map(str, frame.columns))}")
        text = "\n\n".join(frame[column].dropna().astype(str))
    if not text.strip():
        raise ConfigError(file_for_errors, key, f"{path} holds no text; give a file with the text to use")
    return text

"""Labelled text: read a local file, split it once (seeded, de-duplicated, stratified), tokenize it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import ConfigError

READERS = {".csv": pd.read_csv, ".json": pd.read_json, ".jsonl": lambda p: pd.read_json(p, lines=True),
           ".parquet": pd.read_parquet}


@dataclass
class Split:
    """A tokenized split; rows padded to max_length, batches trimmed to their longest row."""

    input_ids: torch.Tensor  # [N, max_length] int64
    attention_mask: torch.Tensor
    labels: torch.Tensor  # [N] int64
    texts: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = self.attention_mask[idx]
        width = max(int(mask.sum(1).max()), 1)
        return self.input_ids[idx, :width], mask[:, :width], self.labels[idx]

    def subset(self, n: int) -> "Split":
        return Split(self.input_ids[:n], self.attention_mask[:n], self.labels[:n], self.texts[:n])

    def concat(self, other: "Split") -> "Split":
        return Split(torch.cat([self.input_ids, other.input_ids]), torch.cat([self.attention_mask, other.attention_mask]),
                     torch.cat([self.labels, other.labels]), self.texts + other.texts)


def _read_frame(path: Path, key: str, file_for_errors: Path) -> pd.DataFrame:
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ConfigError(file_for_errors, key, f"{path.suffix!r} files are not read; use one of {', '.join(READERS)}")
    try:
        return reader(path)
    except Exception as exc:  # pandas raises many types for unreadable files; all mean the same to the user
        raise ConfigError(file_for_errors, key, f"cannot read {path}: {exc}") from None


def read_table(path: Path, text_column: str, label_column: str, file_for_errors: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ConfigError(file_for_errors, "data.path", f"{path} does not exist; give a CSV/JSON/Parquet file")
    frame = _read_frame(path, "data.path", file_for_errors)
    for key, column in (("data.text_column", text_column), ("data.label_column", label_column)):
        if column not in frame.columns:
            raise ConfigError(file_for_errors, key, f"column {column!r} not in {path.name}; "
                                                    f"columns are {', '.join(map(str, frame.columns))}")
    frame = frame[[text_column, label_column]].dropna()
    frame = frame.rename(columns={text_column: "text", label_column: "label"})
    frame["text"] = frame["text"].astype(str)
    return frame


def read_texts(path: Path, text_column: str, file_for_errors: Path) -> list[str]:
    """Unlabelled text: a .txt file with one text per line, or a table's text column."""
    if path.suffix.lower() == ".txt":
        return [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    frame = _read_frame(path, "data.unlabelled", file_for_errors)
    if text_column not in frame.columns:
        raise ConfigError(file_for_errors, "data.unlabelled", f"column {text_column!r} (data.text_column) not in "
                                                              f"{path.name}; columns are {', '.join(map(str, frame.columns))}")
    return frame[text_column].dropna().astype(str).tolist()


def split_frame(frame: pd.DataFrame, validation_fraction: float, seed: int, max_train: int | None,
                max_validation: int | None) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """De-duplicate texts first so no message is in both splits; then a stratified seeded split."""
    frame = frame.drop_duplicates("text").reset_index(drop=True)
    classes = sorted(frame["label"].unique().tolist())
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for cls in classes:
        idx = rng.permutation(np.flatnonzero(frame["label"].to_numpy() == cls))
        n_val = int(round(len(idx) * validation_fraction))
        val_idx.extend(idx[:n_val])
        train_idx.extend(idx[n_val:])
    train = frame.iloc[rng.permutation(train_idx)].reset_index(drop=True)
    val = frame.iloc[rng.permutation(val_idx)].reset_index(drop=True)
    return train.head(max_train) if max_train else train, val.head(max_validation) if max_validation else val, \
        classes


def tokenize(frame: pd.DataFrame, tokenizer, classes: list, max_length: int) -> Split:
    enc = tokenizer(frame["text"].tolist(), padding="max_length", truncation=True, max_length=max_length,
                    return_tensors="pt")
    label_ids = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([label_ids[v] for v in frame["label"]], dtype=torch.long)
    return Split(enc["input_ids"], enc["attention_mask"], labels, frame["text"].tolist())

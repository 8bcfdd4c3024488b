"""Task data: read with `datasets` (a local CSV/JSON/Parquet file, a `save_to_disk` directory, or a hub
name where the machine is online; `datasets` caches and fingerprints it), split once (seeded,
de-duplicated, stratified), tokenized by the model family into named features."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import ConfigError

BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
COMPRESSED = (".bz2", ".gz", ".xz", ".zst")  # `datasets` reads csv/json through these compressions


def table_suffix(path: Path) -> str:
    """The table format's suffix, looking through a compression suffix (reviews.csv.bz2 -> .csv)."""
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in COMPRESSED:
        return suffixes[-2]
    return path.suffix.lower()


@dataclass
class Split:
    """A tokenized split: features padded to max_length; batches trimmed to their longest row."""

    features: dict  # name -> [N, max_length] tensor, named as the model family's inputs
    lengths: torch.Tensor  # [N] real tokens per row
    labels: torch.Tensor  # [N] int64
    texts: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx) -> tuple[dict, torch.Tensor]:
        width = max(int(self.lengths[idx].max()), 1)
        return {k: v[idx, :width] for k, v in self.features.items()}, self.labels[idx]

    def subset(self, n: int) -> "Split":
        return Split({k: v[:n] for k, v in self.features.items()}, self.lengths[:n], self.labels[:n], self.texts[:n])

    def take(self, idx) -> "Split":
        """The rows at `idx` (a slice or index list), in that order."""
        rows = range(len(self))[idx] if isinstance(idx, slice) else idx
        index = torch.as_tensor(list(rows), dtype=torch.long)
        return Split({k: v[index] for k, v in self.features.items()}, self.lengths[index], self.labels[index],
                     [self.texts[i] for i in index.tolist()])

    def concat(self, other: "Split") -> "Split":
        return Split({k: torch.cat([v, other.features[k]]) for k, v in self.features.items()},
                     torch.cat([self.lengths, other.lengths]), torch.cat([self.labels, other.labels]),
                     self.texts + other.texts)


def _load(path: Path, key: str, file_for_errors) -> pd.DataFrame:
    """One table from `datasets`; every reading failure is the user's file, said in one line."""
    import datasets

    datasets.disable_progress_bars()
    try:
        if path.is_dir():  # a `Dataset.save_to_disk` directory (a DatasetDict: its train split)
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if "train" not in ds:
                    raise ConfigError(file_for_errors, key, f"{path} holds splits {', '.join(ds)}; need `train`")
                ds = ds["train"]
        elif path.is_file():
            builder = BUILDERS.get(table_suffix(path))
            if builder is None:
                raise ConfigError(file_for_errors, key, f"{path.suffix!r} files are not read; use one of "
                                                        f"{', '.join(BUILDERS)} (optionally {'/'.join(COMPRESSED)}"
                                                        "-compressed) or a save_to_disk directory")
            ds = datasets.load_dataset(builder, data_files=str(path), split="train")
        else:  # a hub dataset name: only where the machine is online (HF_HUB_OFFLINE unset)
            ds = datasets.load_dataset(str(path), split="train")
    except ConfigError:
        raise
    except Exception as exc:  # datasets/pyarrow raise many types for unreadable data; all mean the same here
        raise ConfigError(file_for_errors, key, f"cannot read {path}: {str(exc).splitlines()[0][:200]}") from None
    return ds.to_pandas()


def read_table(path: Path, text_column: str, label_column: str, file_for_errors: Path,
               slice_column: str | None = None, key: str = "data.path") -> pd.DataFrame:
    """The table's text and label (and slice) columns, renamed `text`, `label` (and `slice`)."""
    if not path.exists() and (path.suffix or path.is_absolute()):
        raise ConfigError(file_for_errors, key, f"{path} does not exist; give a CSV/JSON/Parquet file, "
                                                "a save_to_disk directory or a hub dataset name")
    frame = _load(path, key, file_for_errors)
    columns = {"text": ("data.text_column", text_column), "label": ("data.label_column", label_column)}
    if slice_column:
        columns["slice"] = ("data.slice_column", slice_column)
    for k, column in columns.values():
        if column not in frame.columns:
            raise ConfigError(file_for_errors, k, f"column {column!r} not in {path.name}; "
                                                  f"columns are {', '.join(map(str, frame.columns))}")
    frame = frame[[c for _, c in columns.values()]].dropna()
    frame = frame.rename(columns={c: name for name, (_, c) in columns.items()})
    frame["text"] = frame["text"].astype(str)
    if slice_column:
        frame["slice"] = frame["slice"].astype(str)
    return frame


def binned(frame: pd.DataFrame, bins: tuple, file_for_errors) -> pd.DataFrame:
    """A numeric label column made classes by half-open ranges [lo, hi); rows in no range are dropped."""
    score = pd.to_numeric(frame["label"], errors="coerce")
    if score.isna().any():
        bad = frame["label"][score.isna()].iloc[0]
        raise ConfigError(file_for_errors, "data.label_bins", f"label {bad!r} is not a number; label_bins bins a "
                                                              "numeric label column: remove label_bins or fix the "
                                                              "column")
    label = pd.Series(pd.NA, index=frame.index, dtype="object")
    for name, lo, hi in bins:
        label[(score >= lo) & (score < hi)] = name
    return frame.assign(label=label).dropna(subset=["label"]).reset_index(drop=True)


def read_texts(path: Path, text_column: str, file_for_errors: Path) -> list[str]:
    """Unlabelled text: a .txt file with one text per line, or a table's text column."""
    if path.suffix.lower() == ".txt":
        return [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    frame = _load(path, "data.unlabelled", file_for_errors)
    if text_column not in frame.columns:
        raise ConfigError(file_for_errors, "data.unlabelled", f"column {text_column!r} (data.text_column) not in "
                                                              f"{path.name}; columns are {', '.join(map(str, frame.columns))}")
    return frame[text_column].dropna().astype(str).tolist()


def split_frame(frame: pd.DataFrame, validation_fraction: float, seed: int, max_train: int | None,
                max_validation: int | None) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """De-duplicate texts first so no message is in both splits; then a seeded split stratified by label (and by
    slice, where the task has slices: each slice keeps its share of validation examples)."""
    frame = frame.drop_duplicates("text").reset_index(drop=True)
    classes = sorted(frame["label"].unique().tolist())
    if "slice" in frame:
        strata = (frame["slice"] + "\0" + frame["label"].astype(str)).to_numpy()
        order = sorted(set(strata))
    else:  # by label alone, in the order it always was: a task's split (and its cached teacher) stays as it was
        strata, order = frame["label"].to_numpy(), classes
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for stratum in order:
        idx = rng.permutation(np.flatnonzero(strata == stratum))
        n_val = int(round(len(idx) * validation_fraction))
        val_idx.extend(idx[:n_val])
        train_idx.extend(idx[n_val:])
    train = frame.iloc[rng.permutation(train_idx)].reset_index(drop=True)
    val = frame.iloc[rng.permutation(val_idx)].reset_index(drop=True)
    return train.head(max_train) if max_train else train, val.head(max_validation) if max_validation else val, \
        classes


def tokenize(frame: pd.DataFrame, tokenizer, classes: list, max_length: int, family) -> Split:
    features = family.tokenize(tokenizer, frame["text"].tolist(), max_length)
    label_ids = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([label_ids[v] for v in frame["label"]], dtype=torch.long)
    return Split(features, family.token_mask(features).sum(1), labels, frame["text"].tolist())

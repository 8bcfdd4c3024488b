"""Prepare a task once: split and tokenize the data, fine-tune the teacher, cache it and its outputs."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import families
from ..errors import ConfigError
from ..families.base import Family
from ..locks import file_lock
from ..train import outputs_of, steps_for, train
from . import Task, classification
from .data import Split, binned, read_table, read_texts, split_frame, tokenize

OUTPUTS_FILE = "train_outputs.safetensors"
HOLDOUT_FRACTION, HOLDOUT_MAX, HOLDOUT_MIN = 0.1, 500, 16  # the early-stopping slice of the training split


@dataclass
class Prepared:
    task: Task
    teacher: torch.nn.Module
    tokenizer: object
    classes: list
    train: Split
    val: Split
    teacher_train_outputs: torch.Tensor
    key: str  # identifies teacher + data + split (+ unlabelled text); student caches hang off it
    kd_train: Split | None = None  # train + teacher-labelled unlabelled text (distillation and recovery)
    kd_outputs: torch.Tensor | None = None  # teacher outputs aligned with kd_train
    family: Family | None = None
    task_type: object = classification  # the task type's module: objective, losses, evaluation
    holdout: Split | None = None  # labelled training rows no student trains on (early stopping); never validation
    holdout_outputs: torch.Tensor | None = None  # the teacher's outputs on them
    kd_source: torch.Tensor | None = None  # per kd_train row beyond the labelled ones: the training row it was made
    #                                        from (augmentation), or -1 (unlabelled text)
    val_slices: object = None  # numpy str array: each validation example's slice (a task with slices), else None

    def __post_init__(self):
        if self.kd_train is None:  # no augmentation: distil on the labelled training split
            self.kd_train, self.kd_outputs = self.train, self.teacher_train_outputs
        if self.family is None:
            self.family = families.of(self.teacher)

    def with_holdout(self) -> "Prepared":
        """The same task with the last HOLDOUT_FRACTION of the labelled training split (at most HOLDOUT_MAX rows)
        kept out of every student's training: early stopping watches the distillation loss there. The split was
        shuffled once, so its tail is a random slice; validation is never used for it. Students trained without
        a holdout are cached under another key."""
        n = len(self.train)
        h = min(HOLDOUT_MAX, int(n * HOLDOUT_FRACTION))
        if self.holdout is not None or h < HOLDOUT_MIN:
            return self
        rest = slice(0, n - h)
        kd_train, kd_outputs = self.train.take(rest), self.teacher_train_outputs[rest]
        kd_source = self.kd_source
        if len(self.kd_train) > n:  # teacher-labelled extra text follows the labelled rows
            extra = torch.arange(n, len(self.kd_train))
            if self.kd_source is not None:  # copies made from a held-out row would leak it into training
                extra = extra[self.kd_source < n - h]
            kd_train = kd_train.concat(self.kd_train.take(extra.tolist()))
            kd_outputs = torch.cat([kd_outputs, self.kd_outputs[extra]])
            kd_source = None if self.kd_source is None else self.kd_source[extra - n]
        key = hashlib.sha256(f"{self.key}:holdout:{h}".encode()).hexdigest()[:16]
        return replace(self, kd_train=kd_train, kd_outputs=kd_outputs, key=key, kd_source=kd_source,
                       holdout=self.train.take(slice(n - h, n)), holdout_outputs=self.teacher_train_outputs[n - h:])


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


MIN_PER_CLASS = 10  # fewer examples of a class than this cannot be split into train and a measurable validation


def check_labels(frame, task: Task) -> None:
    """Refuse data that cannot be measured: a text given two different labels, or too few examples."""
    labels_per_text = frame.groupby("text")["label"].nunique()
    clashes = labels_per_text[labels_per_text > 1]
    if len(clashes):
        example = str(clashes.index[0])[:60]
        raise ConfigError(task.source, "data.label_column", f"{len(clashes)} text(s) occur with different labels "
                                                            f"(e.g. {example!r}); fix or de-duplicate the data")
    counts = frame.drop_duplicates("text")["label"].value_counts()
    small = counts[counts < MIN_PER_CLASS]
    if len(counts) >= 2 and len(small):
        raise ConfigError(task.source, "data.path", f"class {small.index[0]!r} has {int(small.iloc[0])} distinct "
                                                    f"example(s); every class needs >= {MIN_PER_CLASS} to be split "
                                                    "and measured")


def read_checked(task: Task):
    """The task's table, read once and checked (contradictory labels, classes too small)."""
    frames = []
    for name, path in task.tables():
        table = read_table(path, task.text_column, task.label_column, Path(task.source), task.slice_column,
                           "data.path" if name is None else f"data.path.{name}")
        frames.append(table if name is None else table.assign(slice=name))
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if task.label_bins:
        frame = binned(frame, task.label_bins, task.source)
    if task.classes is not None:
        labels = frame["label"].astype(str)
        missing = [c for c in task.classes if c not in set(labels)]
        if missing:
            raise ConfigError(task.source, "data.classes", f"label {missing[0]!r} does not occur in column "
                                                           f"{task.label_column!r}; labels there are "
                                                           f"{', '.join(sorted(set(labels))[:10])}")
        frame = frame[labels.isin(task.classes)].reset_index(drop=True)
    check_labels(frame, task)
    return frame


def data_fingerprint(path: Path) -> str:
    """A local file's sha256; a save_to_disk directory's files' sha256s; a hub name as given."""
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        return hashlib.sha256("".join(file_sha256(p) for p in sorted(path.rglob("*")) if p.is_file())
                              .encode()).hexdigest()
    return str(path)


def teacher_folder(task: Task, cache_dir: Path, key: str | None = None) -> Path:
    """Where the task's fine-tuned teacher is cached (`key`: the task's, where already computed: it hashes the
    teacher's weights). That key leaves unlabelled text out (only students depend on it): not `Prepared.key`."""
    return cache_dir / f"teacher-{key or _task_key(task)}"


def _task_key(task: Task) -> str:
    weights = sorted(task.teacher_dir.glob("*.safetensors")) + sorted(task.teacher_dir.glob("*.bin"))
    # the teacher and its split depend on these; unlabelled text only on the students (Prepared.key)
    parts = {k: str(v) for k, v in asdict(task).items()
             if k not in ("path", "name", "teacher_dir", "data_path", "unlabelled_path", "family", "teacher_weights",
                          "augment_copies", "augment_replace", "classes", "slice_column", "slice_paths",
                          "label_bins")}
    # only where given: the keys (and caches) of tasks without them stay as they were
    if task.classes is not None:
        parts["classes"] = str(task.classes)
    if task.slice_column or task.slice_paths:  # slices change the split (stratified by slice)
        parts["slices"] = task.slice_column or [(name, data_fingerprint(p)) for name, p in task.slice_paths]
    if task.label_bins:
        parts["label_bins"] = str(task.label_bins)
    parts["data"] = data_fingerprint(task.data_path)
    from .. import accel

    if accel.on_gpu() and task.finetune_epochs > 0:  # fine-tuned in bf16 on a GPU: another teacher (CPU key kept)
        parts["device"] = "cuda-bf16"
    parts["weights"] = [file_sha256(p) for p in weights]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def prepare(task: Task, cache_dir: Path, log=print, frame=None) -> Prepared:
    """`frame`: the table `read_checked` already returned (the CLI checks it before making a run folder)."""
    from transformers import AutoTokenizer

    family = families.get(task.family)
    frame = read_checked(task) if frame is None else frame
    train_df, val_df, classes = split_frame(frame, task.validation_fraction, task.split_seed,
                                            task.max_train_examples, task.max_validation_examples)
    if len(classes) < 2:
        raise ConfigError(task.source, "data.label_column", f"only {len(classes)} distinct label(s); need >= 2")
    try:
        tokenizer = AutoTokenizer.from_pretrained(task.teacher_dir)
    except (OSError, ValueError) as exc:
        raise ConfigError(task.source, "teacher", f"no usable tokenizer in {task.teacher_dir}: {exc}") from None
    train_split = tokenize(train_df, tokenizer, classes, task.max_length, family)
    val_split = tokenize(val_df, tokenizer, classes, task.max_length, family)
    log(f"task {task.name}: {len(train_split)} train / {len(val_split)} validation examples, "
        f"{len(classes)} classes, max length {task.max_length} (split seed {task.split_seed})")
    val_slices = val_df["slice"].to_numpy().astype(str) if "slice" in val_df else None
    if val_slices is not None:
        names, counts = np.unique(val_slices, return_counts=True)
        log("validation examples per slice: " + ", ".join(f"{n} {c}" for n, c in zip(names, counts)))

    key = _task_key(task)
    cached = teacher_folder(task, cache_dir, key)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(cached.with_name(f"{cached.name}.lock")):  # one worker fine-tunes; the others then load it
        teacher = _teacher(task, family, tokenizer, classes, train_split, cached, log)
    outputs = load_file(str(cached / OUTPUTS_FILE))["train_outputs"]
    if outputs.shape != (len(train_split), len(classes)):
        shutil.rmtree(cached, ignore_errors=True)
        raise ConfigError(cached, "train_outputs", "cached teacher outputs do not match the data; the cache was "
                                                   "removed, run again")
    if task.unlabelled_path is None and not task.augment_copies:
        return Prepared(task, teacher, tokenizer, classes, train_split, val_split, outputs, key, family=family,
                        val_slices=val_slices)
    kd_train, kd_outputs, sources = train_split, outputs, []
    if task.unlabelled_path is not None:
        extra = _teacher_labelled(task, family, tokenizer, classes, train_split, val_split, log)
        unlabelled_sha = file_sha256(task.unlabelled_path)
        extra_outputs = _cached_outputs(teacher, extra, cached / f"unlabelled-{unlabelled_sha[:16]}.safetensors")
        extra.labels = extra_outputs.argmax(-1)  # the label loss reads the teacher's answer (pseudo-label)
        key = hashlib.sha256(f"{key}:{unlabelled_sha}".encode()).hexdigest()[:16]
        kd_train, kd_outputs, sources = kd_train.concat(extra), torch.cat([kd_outputs, extra_outputs]), [-1] * len(extra)
    if task.augment_copies:
        texts, made_from = augmented_texts(train_split.texts, task.augment_copies, task.augment_replace,
                                           task.split_seed, exclude=set(val_split.texts))
        log(f"augmentation: {len(texts)} texts made from the training split ({task.augment_copies} per text, "
            f"{task.augment_replace:.0%} of words replaced), labelled by the teacher")
        import pandas as pd

        made = tokenize(pd.DataFrame({"text": texts, "label": [classes[0]] * len(texts)}), tokenizer, classes,
                        task.max_length, family)
        tag = f"{task.augment_copies}:{task.augment_replace}:{task.split_seed}"
        made_outputs = _cached_outputs(teacher, made, cached / f"augmented-{hashlib.sha256(tag.encode()).hexdigest()[:16]}"
                                                              ".safetensors")
        made.labels = made_outputs.argmax(-1)
        key = hashlib.sha256(f"{key}:augment:{tag}".encode()).hexdigest()[:16]
        kd_train, kd_outputs = kd_train.concat(made), torch.cat([kd_outputs, made_outputs])
        sources += made_from
    return Prepared(task, teacher, tokenizer, classes, train_split, val_split, outputs, key, kd_train, kd_outputs,
                    family=family, kd_source=torch.tensor(sources, dtype=torch.long), val_slices=val_slices)


def augmented_texts(texts: list[str], copies: int, replace_share: float, seed: int,
                    exclude: set[str]) -> tuple[list[str], list[int]]:
    """`copies` variants of each training text, each word replaced with probability `replace_share` by a word drawn
    from the training text's own word frequencies (random word replacement: no model hub, no MLM head needed; the
    teacher's soft labels on the variants carry what the student learns). Returns the texts and, per text, the
    training row it was made from; variants equal to any training or excluded (validation) text are dropped. The
    word pool is the whole training split's: a held-out row's variants are dropped (Prepared.with_holdout), but
    single words of it may appear in other rows' variants."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = [t.split() for t in texts]
    pool = np.array([w for ws in words for w in ws] or [""], dtype=object)
    seen = set(texts) | exclude
    out, made_from = [], []
    for i, ws in enumerate(words):
        for _ in range(copies):
            if not ws:
                break
            swap = rng.random(len(ws)) < replace_share
            new = " ".join(pool[rng.integers(len(pool))] if s else w for w, s in zip(ws, swap))
            if new not in seen:
                seen.add(new)
                out.append(new)
                made_from.append(i)
    return out, made_from


def _teacher(task: Task, family: Family, tokenizer, classes, train_split: Split, cached: Path, log):
    """The fine-tuned teacher from the cache, or fine-tuned now and cached (atomically)."""
    teacher = _load_cached(family, cached, len(classes), log)
    if teacher is None:
        teacher = family.load(task.teacher_dir, len(classes), task.source,
                              safetensors_only=task.teacher_weights == "safetensors")
        if task.finetune_epochs > 0:
            steps = steps_for(len(train_split), task.finetune_epochs)
            log(f"fine-tuning the teacher: {steps} steps ({task.finetune_epochs:g} epochs); cached afterwards")
            t0 = time.perf_counter()
            train(teacher, train_split, steps=steps, lr=task.finetune_learning_rate, seed=task.split_seed,
                  desc="teacher fine-tune", log=log)
            log(f"teacher fine-tuned in {time.perf_counter() - t0:.0f} s")
        outputs = outputs_of(teacher, train_split)
        tmp = cached.with_name(cached.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        teacher.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        save_file({"train_outputs": outputs.contiguous()}, str(tmp / OUTPUTS_FILE))
        shutil.rmtree(cached, ignore_errors=True)
        tmp.rename(cached)  # atomic: a crash mid-write never leaves a half cache
    else:
        log(f"teacher loaded from cache {cached}")
    return teacher


def _cached_outputs(teacher, split: Split, path: Path) -> torch.Tensor:
    """The teacher's outputs on `split`, cached beside the teacher (a forward over thousands of texts per run)."""
    if path.is_file():
        try:
            outputs = load_file(str(path))["outputs"]
            if outputs.shape[0] == len(split):
                return outputs
        except (OSError, KeyError, RuntimeError, SafetensorError):  # unreadable: computed again below
            pass
    outputs = outputs_of(teacher, split)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    save_file({"outputs": outputs.contiguous()}, str(tmp))
    os.replace(tmp, path)  # atomic; concurrent workers write the same numbers
    return outputs


def _teacher_labelled(task: Task, family: Family, tokenizer, classes, train_split: Split, val_split: Split,
                      log) -> Split:
    """The user's unlabelled text minus anything in either split (validation text must never be trained on)."""
    import pandas as pd

    seen = set(train_split.texts) | set(val_split.texts)
    texts = list(dict.fromkeys(t for t in read_texts(task.unlabelled_path, task.text_column, Path(task.source))
                               if t not in seen))
    if not texts:
        raise ConfigError(task.source, "data.unlabelled", f"{task.unlabelled_path} has no text outside the "
                                                          "labelled splits; give new task text or remove the key")
    log(f"augmentation: {len(texts)} unlabelled texts from {task.unlabelled_path.name}, labelled by the teacher")
    frame = pd.DataFrame({"text": texts, "label": [classes[0]] * len(texts)})  # placeholder labels, replaced
    return tokenize(frame, tokenizer, classes, task.max_length, family)


def _load_cached(family: Family, cached: Path, num_labels: int, log):
    if not (cached / OUTPUTS_FILE).is_file():
        return None
    try:
        return family.load(cached, num_labels, str(cached))
    except ConfigError as exc:
        log(f"warning: teacher cache unreadable ({exc}); fine-tuning again")
        shutil.rmtree(cached, ignore_errors=True)
        return None

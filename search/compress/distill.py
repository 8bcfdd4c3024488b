"""Distill: cut a student from the teacher (layers, width, heads, FFN), then train it on the teacher's outputs."""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .. import accel, families
from ..candidate import DistillParams
from ..errors import CandidateError
from ..families.base import Importance
from ..locks import file_lock
from ..train import KD, EarlyStopping, Transfer, steps_for, train
from . import vocab
from .prune import top_k


def teacher_layers(n_teacher: int, n_student: int) -> list[int]:
    """Evenly spaced teacher layers, always keeping the last (it feeds the classifier)."""
    if n_student >= n_teacher:
        return list(range(n_teacher))
    # spacing >= 1 when n_student <= n_teacher, so the rounded indices are distinct
    return sorted(int(round(x)) for x in np.linspace(n_teacher - 1, 0, n_student))


def build_student(teacher, params: DistillParams, importance: Importance, vocab_ids=None, unk_id: int = 0,
                  seed: int = 0):
    """Initialise from the teacher: chosen layers, then the most important heads, neurons and dims;
    with vocab="task", only the embedding rows of `vocab_ids` (the task's tokens)."""
    family = families.of(teacher)
    shape = family.shape_of(teacher)
    limits = family.limits(shape)
    if params.layers > limits.layers or params.hidden > limits.hidden or params.ffn > limits.ffn:
        raise CandidateError(f"student {params} is larger than the teacher {shape}")
    if params.hidden % limits.head_dim or not 1 <= params.heads <= limits.max_heads(params.hidden):
        raise CandidateError(f"heads={params.heads} needs 1 <= heads <= hidden/{limits.head_dim}")
    if params.heads % limits.head_group:
        raise CandidateError(f"heads={params.heads} is not a whole number of {limits.head_group}-head KV groups")
    student = copy.deepcopy(teacher)
    keep_layers = teacher_layers(shape.layers, params.layers)
    family.select_layers(student, keep_layers)
    teacher_heads = []
    for layer, src in zip(family.blocks(student), keep_layers):
        heads = family.top_heads(layer, importance.heads[src], params.heads)  # sorted: student head j = heads[j]
        family.slice_heads(layer, heads.tolist())
        teacher_heads.append(heads.tolist())
        family.slice_ffn(layer, top_k(importance.ffn[src], params.ffn))
    if params.hidden < shape.hidden:
        family.slice_hidden(student, top_k(importance.hidden, params.hidden))
    if params.vocab == "task":
        if vocab_ids is None:
            raise CandidateError("distill.vocab=task needs the task's token ids")
        vocab.trim(student, vocab_ids, unk_id)
    family.sync_config(student)
    student.config.search_teacher_layers = keep_layers
    student.config.search_teacher_heads = teacher_heads
    if params.init == "random":
        family.reinitialise(student, torch.Generator().manual_seed(seed))
    elif params.init != "teacher":
        raise CandidateError(f"unknown distill.init {params.init!r}; one of teacher, random")
    return student.eval()


def cache_key(task_key: str, params: DistillParams, seed: int) -> str:
    parts = {"task": task_key, "params": asdict(params), "seed": seed}
    if accel.on_gpu():  # bf16 on a GPU trains another student than fp32 on the CPU (CPU keys unchanged)
        parts["device"] = "cuda-bf16"
    blob = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class MoreTraining:
    """A second rung (rungs.py): `epochs` more distillation from the first rung's student, early-stopped on held-out
    training rows (`holdout`, with the teacher's outputs on them) after `patience` half-epoch checks without gain."""

    epochs: float
    holdout: object  # tasks.data.Split
    holdout_outputs: torch.Tensor
    patience: int = 2


def apply(teacher, params: DistillParams, *, importance: Importance, train_split, teacher_outputs,
          cache_dir: Path | None, task_key: str, seed: int = 0, log=print, vocab_ids=None, unk_id: int = 0,
          task_type=None, more: MoreTraining | None = None, record: dict | None = None):
    """Return a trained student; a student with the same params, task and seed is loaded from cache. `more`: then
    train it further (rung 1), cached separately; `record` receives the first rung's steps (`rung0_steps`) and what
    the second rung did (early stopping)."""
    student = build_student(teacher, params, importance, vocab_ids, unk_id, seed)
    path = cache_dir / f"student-{cache_key(task_key, params, seed)}.safetensors" if cache_dir else None
    args = (teacher, student, params, importance, train_split, teacher_outputs, seed, log, task_type)
    if path is None:
        done = _train(*args)
    else:
        # two workers never train the same student at once: the second waits, then loads the first one's
        with file_lock(path.with_suffix(".lock")):
            done = _cached_or_trained(path, *args)
    if record is not None:  # a student cached before the record existed says nothing: None
        record["rung0_steps"] = done.get("steps")
    if more is None:
        return student
    more_path = path.with_name(f"{path.stem}-more{more.epochs:g}-p{more.patience}.safetensors") if path else None
    if more_path is None:
        done = _train(*args, more=more)
    else:
        with file_lock(more_path.with_suffix(".lock")):
            done = _cached_or_trained(more_path, *args, more=more)
    if record is not None:
        record.update(done)
    return student


def _cached_or_trained(path: Path, teacher, student, params, importance, train_split, teacher_outputs, seed, log,
                       task_type, more: MoreTraining | None = None) -> dict:
    """Load the student from `path`, or train it and cache it there (atomically); returns what training did (the
    second rung's early-stopping record, kept in the file's metadata)."""
    if path.is_file():
        try:
            with safe_open(str(path), "pt") as f:
                done = json.loads((f.metadata() or {}).get("training", "{}"))
            student.load_state_dict(load_file(str(path)))
            log(f"  distill: student loaded from cache {path.name}")
            return done
        except (RuntimeError, OSError, SafetensorError, ValueError) as exc:  # corrupt or stale cache: train again
            log(f"  distill: cache {path.name} unreadable ({exc.__class__.__name__}); training again")
    done = _train(teacher, student, params, importance, train_split, teacher_outputs, seed, log, task_type, more)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(tmp),
              metadata={"training": json.dumps(done)})
    shutil.move(tmp, path)
    return done


def _train(teacher, student, params: DistillParams, importance: Importance, train_split, teacher_outputs, seed: int,
           log, task_type, more: MoreTraining | None = None) -> dict:
    """Rung 0: the recipe's epochs. `more`: that many epochs further from the student as it is (a fresh warm-up and
    cosine schedule, another shuffle), early-stopped on the held-out rows."""
    steps = steps_for(len(train_split), more.epochs if more else params.epochs)
    kd = KD(teacher_outputs, temperature=params.temperature, alpha=params.alpha,
            **({"task_type": task_type} if task_type is not None else {}))
    transfer = None
    if params.hidden_weight or params.attention_weight:
        keep_dims = top_k(importance.hidden, params.hidden)  # what slice_hidden kept, in its order
        transfer = Transfer(teacher, student.config.search_teacher_layers, keep_dims,
                            student.config.search_teacher_heads, params.hidden_weight, params.attention_weight)
    early = None
    if more is not None:
        early = EarlyStopping(more.holdout, more.holdout_outputs, kd, steps_for(len(train_split), 0.5), more.patience)
        seed += 1  # the second rung sees the data in another order
    torch.manual_seed(seed)
    train(student, train_split, steps=steps, kd=kd, lr=1e-4, seed=seed, desc="  distill" + (" more" if more else ""),
          transfer=transfer, log=log, early=early)
    return early.record(steps) if early else {"steps": steps}

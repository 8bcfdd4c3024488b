"""Distill: cut a student from the teacher (layers, width, heads, FFN), then train it on soft logits."""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .. import arch
from ..candidate import HEAD_DIM, DistillParams
from ..errors import CandidateError
from . import vocab
from ..train import KD, Transfer, steps_for, train


def teacher_layers(n_teacher: int, n_student: int) -> list[int]:
    """Evenly spaced teacher layers, always keeping the last (it feeds the classifier)."""
    if n_student >= n_teacher:
        return list(range(n_teacher))
    # spacing >= 1 when n_student <= n_teacher, so the rounded indices are distinct
    return sorted(int(round(x)) for x in np.linspace(n_teacher - 1, 0, n_student))


def build_student(teacher, params: DistillParams, importance: arch.Importance, vocab_ids=None, unk_id: int = 0,
                  seed: int = 0):
    """Initialise from the teacher: chosen layers, then the most important heads, neurons and dims;
    with vocab="task", only the embedding rows of `vocab_ids` (the task's tokens)."""
    shape = arch.shape_of(teacher)
    if params.layers > shape.layers or params.hidden > shape.hidden or params.ffn > min(shape.ffn):
        raise CandidateError(f"student {params} is larger than the teacher {shape}")
    if params.hidden % HEAD_DIM or not 1 <= params.heads <= params.hidden // HEAD_DIM:
        raise CandidateError(f"heads={params.heads} needs 1 <= heads <= hidden/{HEAD_DIM}")
    student = copy.deepcopy(teacher)
    keep_layers = teacher_layers(shape.layers, params.layers)
    arch.select_layers(student, keep_layers)
    teacher_heads = []
    for layer, src in zip(arch.layers_of(student), keep_layers):
        heads = arch.top_k(importance.heads[src], params.heads)  # sorted: student head j is teacher head heads[j]
        arch.slice_heads(layer, heads.tolist())
        teacher_heads.append(heads.tolist())
        arch.slice_ffn(layer, arch.top_k(importance.ffn[src], params.ffn))
    if params.hidden < shape.hidden:
        arch.slice_hidden(student, arch.top_k(importance.hidden, params.hidden))
    if params.vocab == "task":
        if vocab_ids is None:
            raise CandidateError("distill.vocab=task needs the task's token ids")
        vocab.trim(student, vocab_ids, unk_id)
    arch.sync_config(student)
    student.config.search_teacher_layers = keep_layers
    student.config.search_teacher_heads = teacher_heads
    if params.init == "random":
        reinitialise(student, torch.Generator().manual_seed(seed))
    elif params.init != "teacher":
        raise CandidateError(f"unknown distill.init {params.init!r}; one of teacher, random")
    return student.eval()


@torch.no_grad()
def reinitialise(model, generator: torch.Generator, std: float = 0.02) -> None:
    """BERT's own initialisation (normal(0, 0.02) weights, zero biases, unit LayerNorms) at the same shape;
    by hand because the cut model's heads x head_dim != hidden, which from_config cannot express."""
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            module.weight.normal_(0.0, std, generator=generator)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, torch.nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()


def cache_key(task_key: str, params: DistillParams, seed: int) -> str:
    blob = json.dumps({"task": task_key, "params": asdict(params), "seed": seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def apply(teacher, params: DistillParams, *, importance: arch.Importance, train_split, teacher_logits,
          cache_dir: Path | None, task_key: str, seed: int = 0, log=print, vocab_ids=None, unk_id: int = 0):
    """Return a trained student; a student with the same params, task and seed is loaded from cache."""
    student = build_student(teacher, params, importance, vocab_ids, unk_id, seed)
    path = cache_dir / f"student-{cache_key(task_key, params, seed)}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        try:
            student.load_state_dict(load_file(str(path)))
            log(f"  distill: student loaded from cache {path.name}")
            return student
        except (RuntimeError, OSError) as exc:  # corrupt or stale cache file: train again
            log(f"  distill: cache {path.name} unreadable ({exc.__class__.__name__}); training again")
    steps = steps_for(len(train_split), params.epochs)
    kd = KD(teacher_logits, temperature=params.temperature, alpha=params.alpha)
    transfer = None
    if params.hidden_weight or params.attention_weight:
        keep_dims = arch.top_k(importance.hidden, params.hidden)  # what slice_hidden kept, in its order
        transfer = Transfer(teacher, student.config.search_teacher_layers, keep_dims,
                            student.config.search_teacher_heads, params.hidden_weight, params.attention_weight)
    torch.manual_seed(seed)
    train(student, train_split, steps=steps, kd=kd, lr=1e-4, seed=seed, desc="  distill", transfer=transfer)
    if path is not None:
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(tmp))
        shutil.move(tmp, path)
    return student

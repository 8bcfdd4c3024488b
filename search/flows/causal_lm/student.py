"""A language-model student: the teacher with its least influential blocks dropped and its FFN channels and KV
head groups cut (the most important kept), then a short recovery by distillation on calibration text.

Depth is ranked by block influence (ShortGPT: 1 - cos(input, output) of each block on calibration text),
width by the family's norm-based importance; both measured once on the teacher (`Scores`)."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .recipe import LMRecipe
from ...errors import CandidateError
from ...families.base import Importance
from ...tasks import causal_lm
from ...compress.prune import top_k

RECOVERY_WINDOW = 256  # tokens per recovery step (one sequence: memory stays small on an edge-class host)
RECOVERY_LR = 5e-5
PROGRESS_EVERY_S = 30.0


@dataclass
class Scores:
    blocks: torch.Tensor  # [layers] block influence, higher = changes its input more = keep first
    importance: Importance


def save_scores(scores: Scores, path) -> None:
    from safetensors.torch import save_file

    imp = scores.importance
    tensors = {"blocks": scores.blocks.contiguous()}
    tensors.update({f"heads.{i}": t.contiguous() for i, t in enumerate(imp.heads)})
    tensors.update({f"ffn.{i}": t.contiguous() for i, t in enumerate(imp.ffn)})
    tensors["hidden"] = imp.hidden.contiguous()
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)


def load_scores(path) -> Scores | None:
    """Scores saved by save_scores (measured once per teacher and calibration text), or None."""
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    t = load_file(str(path))
    n = len(t["blocks"])
    return Scores(blocks=t["blocks"], importance=Importance(heads=[t[f"heads.{i}"] for i in range(n)],
                                                            ffn=[t[f"ffn.{i}"] for i in range(n)], hidden=t["hidden"]))


def windows_of(ids: np.ndarray, window: int, count: int) -> list[torch.Tensor]:
    n = min(count, len(ids) // window)
    return [torch.as_tensor(ids[i * window:(i + 1) * window], dtype=torch.long).unsqueeze(0) for i in range(n)]


@torch.no_grad()
def measure_scores(family, teacher, calibration_ids: np.ndarray, window: int = 256, count: int = 4) -> Scores:
    rows = torch.cat(windows_of(calibration_ids, window, count))
    f = family.sequence_features(rows)
    return Scores(blocks=family.block_importance(teacher, f), importance=family.measure_importance(teacher, f))


def layers_kept(scores: Scores, drop: int) -> list[int]:
    """Every block but the `drop` least influential, in order."""
    n = len(scores.blocks)
    if not 0 <= drop < n:
        raise CandidateError(f"drop_layers={drop}: the teacher has {n} layers; drop fewer")
    dropped = set(torch.argsort(scores.blocks)[:drop].tolist())
    return [i for i in range(n) if i not in dropped]


def cut(family, teacher, recipe: LMRecipe, scores: Scores):
    shape = family.shape_of(teacher)
    if recipe.ffn is not None and not 1 <= recipe.ffn <= min(shape.ffn):
        raise CandidateError(f"ffn={recipe.ffn}: the teacher has {min(shape.ffn)} FFN channels per layer")
    if recipe.kv_groups is not None and not 1 <= recipe.kv_groups <= min(shape.kv_heads):
        raise CandidateError(f"kv_groups={recipe.kv_groups}: the teacher has {min(shape.kv_heads)} KV heads")
    student = copy.deepcopy(teacher)
    keep = layers_kept(scores, recipe.drop_layers)
    family.select_layers(student, keep)
    group = family.group_size(shape)
    for layer, src in zip(family.blocks(student), keep):
        if recipe.kv_groups is not None and recipe.kv_groups < shape.kv_heads[src]:
            heads = family.top_heads(layer, scores.importance.heads[src], recipe.kv_groups * group)
            family.slice_heads(layer, heads.tolist())
        if recipe.ffn is not None and recipe.ffn < shape.ffn[src]:
            family.slice_ffn(layer, top_k(scores.importance.ffn[src], recipe.ffn))
    family.sync_config(student)
    return student.eval()


def recover(family, student, teacher, calibration_ids: np.ndarray, steps: int, seed: int = 0, log=print) -> dict:
    """`steps` AdamW steps of KL(teacher || student) on calibration windows (the teacher run alongside, no
    cache: one forward per step is cheaper than storing 49k-way distributions)."""
    if steps <= 0:
        return {"recovery_steps": 0}
    wins = windows_of(calibration_ids, RECOVERY_WINDOW, len(calibration_ids) // RECOVERY_WINDOW)
    if not wins:
        raise CandidateError("no calibration text for recovery")
    order = np.random.default_rng(seed).permutation(len(wins))
    student.train()
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=RECOVERY_LR, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    t0 = last = time.perf_counter()
    losses = []
    for step in range(steps):
        f = family.sequence_features(wins[order[step % len(wins)]])
        with torch.no_grad():
            target = family.forward(teacher, f).outputs
        loss = causal_lm.kd_loss(family.forward(student, f).outputs, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if time.perf_counter() - last > PROGRESS_EVERY_S:
            last = time.perf_counter()
            log(f"    recovery step {step + 1}/{steps}: KL {np.mean(losses[-8:]):.4f} ({last - t0:.0f} s)")
    student.eval()
    return {"recovery_steps": steps, "recovery_kl_first": losses[0], "recovery_kl_last": float(np.mean(losses[-4:])),
            "recovery_s": time.perf_counter() - t0}

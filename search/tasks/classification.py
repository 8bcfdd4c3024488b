"""Task type `classification`: labels over texts; quality is accuracy on the held-out split (a floor).

What this task type knows: its quality objective and its direction, the training loss, distillation's
loss against the teacher's outputs, and how a split's outputs are scored."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..objectives import ACCURACY, slice_key

NAME = "classification"
OBJECTIVE = ACCURACY


def loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, labels)


def kd_loss(outputs: torch.Tensor, teacher_outputs: torch.Tensor, labels: torch.Tensor, temperature: float,
            alpha: float) -> torch.Tensor:
    """Soft-target distillation (Hinton et al.): alpha * T^2 * KL(teacher_T || student_T) + (1-alpha) * CE."""
    t = temperature
    soft = F.kl_div(F.log_softmax(outputs / t, -1), F.log_softmax(teacher_outputs / t, -1),
                    log_target=True, reduction="batchmean") * t * t
    return alpha * soft + (1 - alpha) * loss(outputs, labels)


def scores(preds: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy and macro F1 (SMS spam is 87% ham: accuracy alone flatters a majority-class model)."""
    f1s = []
    for c in np.unique(labels):
        tp = np.sum((preds == c) & (labels == c))
        fp, fn = np.sum((preds == c) & (labels != c)), np.sum((preds != c) & (labels == c))
        f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
    return {"accuracy": float(np.mean(preds == labels)), "macro_f1": float(np.mean(f1s))}


def evaluate(outputs: np.ndarray, labels: np.ndarray, slices: np.ndarray | None = None) -> dict:
    """Scores over the split, and the accuracy on each slice (`accuracy@<slice>`) where the task has slices."""
    preds = outputs.argmax(-1)
    out = scores(preds, labels)
    if slices is not None:
        for name in dict.fromkeys(slices.tolist()):  # in order of first appearance: stable for a fixed split
            rows = slices == name
            out[slice_key(OBJECTIVE.name, name)] = float(np.mean(preds[rows] == labels[rows]))
    return out

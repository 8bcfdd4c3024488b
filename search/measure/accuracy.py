"""Accuracy of the artifact itself: run the onnxruntime model over the validation split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from ..tasks.data import Split


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting: on a shared machine spinning threads turned ms into 100s of ms (BACKENDS.md)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def logits(path: Path, data: Split, threads: int = 2, batch_size: int = 64) -> np.ndarray:
    sess = session(path, threads)
    out = []
    for start in range(0, len(data), batch_size):
        ids, mask, _ = data.batch(torch.arange(start, min(start + batch_size, len(data))))
        out.append(sess.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0])
    return np.concatenate(out)


def predict(path: Path, data: Split, threads: int = 2, batch_size: int = 64) -> np.ndarray:
    return logits(path, data, threads, batch_size).argmax(-1)


def scores(preds: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy and macro F1 (SMS spam is 87% ham: accuracy alone flatters a majority-class model)."""
    f1s = []
    for c in np.unique(labels):
        tp = np.sum((preds == c) & (labels == c))
        fp, fn = np.sum((preds == c) & (labels != c)), np.sum((preds != c) & (labels == c))
        f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
    return {"accuracy": float(np.mean(preds == labels)), "macro_f1": float(np.mean(f1s))}


def evaluate(path: Path, data: Split, threads: int = 2) -> dict:
    return scores(predict(path, data, threads), data.labels.numpy())

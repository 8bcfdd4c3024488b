"""One training loop for teacher fine-tuning, distillation and pruning recovery.

Hand-written rather than transformers.Trainer: every use here is a short CPU loop whose loss
reads cached teacher logits by example index, which Trainer would need a custom subclass for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .tasks.data import Split


@dataclass(frozen=True)
class KD:
    """Soft-logit distillation (Hinton et al.): alpha * T^2 * KL(teacher_T || student_T) + (1-alpha) * CE."""

    teacher_logits: torch.Tensor  # [N, C], aligned with the training split
    temperature: float = 2.0
    alpha: float = 0.5

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        soft = F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(self.teacher_logits[idx] / t, -1),
                        log_target=True, reduction="batchmean") * t * t
        return self.alpha * soft + (1 - self.alpha) * F.cross_entropy(logits, labels)


class HiddenTransfer:
    """Hidden-state transfer (TinyBERT / MiniLM style): MSE between each student layer's output and the
    output of the teacher layer it was cut from, on the hidden dims the student kept. Teacher states are
    computed per batch (caching them would take ~1.4 GB for the default task)."""

    def __init__(self, teacher, teacher_layers: list[int], keep_dims: torch.Tensor, weight: float):
        self.teacher, self.layers, self.dims, self.weight = teacher.eval(), teacher_layers, keep_dims, weight

    def loss(self, student_states, ids, mask) -> torch.Tensor:
        with torch.no_grad():
            t_states = self.teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        real = mask.bool()
        total = 0.0
        for s_layer, t_layer in enumerate(self.layers):  # hidden_states[0] is the embeddings' output
            target = t_states[t_layer + 1][..., self.dims][real]
            total = total + F.mse_loss(student_states[s_layer + 1][real], target)
        return self.weight * total / len(self.layers)


def train(model: torch.nn.Module, data: Split, *, steps: int, kd: KD | None = None, lr: float = 1e-4,
          batch_size: int = 32, seed: int = 0, desc: str = "train", hidden: HiddenTransfer | None = None) -> float:
    """Train for `steps` optimizer steps (cycling over seeded shuffles); returns the last mean loss."""
    if steps <= 0:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    model.train()
    order = torch.empty(0, dtype=torch.long)
    recent = []
    bar = tqdm(range(steps), desc=desc, leave=False, mininterval=2.0, disable=None)  # None: off when not a TTY
    for _ in bar:
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(data), generator=gen)])
        idx, order = order[:batch_size], order[batch_size:]
        ids, mask, labels = data.batch(idx)
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=hidden is not None)
        loss = kd.loss(out.logits, labels, idx) if kd is not None else F.cross_entropy(out.logits, labels)
        if hidden is not None:
            loss = loss + hidden.loss(out.hidden_states, ids, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        recent = (recent + [loss.item()])[-20:]
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", refresh=False)
    model.eval()
    return sum(recent) / len(recent)


def steps_for(n_examples: int, epochs: float, batch_size: int = 32) -> int:
    return max(1, int(math.ceil(n_examples / batch_size * epochs)))


@torch.no_grad()
def logits_of(model: torch.nn.Module, data: Split, batch_size: int = 64) -> torch.Tensor:
    model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        ids, mask, _ = data.batch(torch.arange(start, min(start + batch_size, len(data))))
        out.append(model(input_ids=ids, attention_mask=mask).logits.float())
    return torch.cat(out)

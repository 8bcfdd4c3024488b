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


class Transfer:
    """Intermediate-layer distillation (TinyBERT / MiniLM style), from one teacher forward per batch:
    - hidden states: MSE between each student layer's output and the output of the teacher layer it was
      cut from, on the hidden dims the student kept;
    - attention: KL(teacher || student) of each kept head's attention distribution, per real query token.
    Teacher states are computed per batch: caching them would take ~1.4 GB for the default task."""

    def __init__(self, teacher, teacher_layers: list[int], keep_dims: torch.Tensor, teacher_heads: list[list[int]],
                 hidden_weight: float = 0.0, attention_weight: float = 0.0):
        self.teacher, self.layers, self.dims, self.heads = teacher.eval(), teacher_layers, keep_dims, teacher_heads
        self.hidden_weight, self.attention_weight = hidden_weight, attention_weight

    def loss(self, out, ids, mask) -> torch.Tensor:
        with torch.no_grad():
            t_out = self.teacher(input_ids=ids, attention_mask=mask, output_hidden_states=self.hidden_weight > 0,
                                 output_attentions=self.attention_weight > 0)
        real = mask.bool()
        total = 0.0
        for s_layer, t_layer in enumerate(self.layers):
            if self.hidden_weight:  # hidden_states[0] is the embeddings' output
                target = t_out.hidden_states[t_layer + 1][..., self.dims][real]
                total = total + self.hidden_weight * F.mse_loss(out.hidden_states[s_layer + 1][real], target)
            if self.attention_weight:
                t_att = t_out.attentions[t_layer][:, self.heads[s_layer]].permute(0, 2, 1, 3)[real]  # [q, h, k]
                s_att = out.attentions[s_layer].permute(0, 2, 1, 3)[real]
                kl = (t_att * (t_att.clamp_min(1e-9).log() - s_att.clamp_min(1e-9).log())).sum(-1).mean()
                total = total + self.attention_weight * kl
        return total / len(self.layers)


def train(model: torch.nn.Module, data: Split, *, steps: int, kd: KD | None = None, lr: float = 1e-4,
          batch_size: int = 32, seed: int = 0, desc: str = "train", transfer: Transfer | None = None) -> float:
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
        out = model(input_ids=ids, attention_mask=mask,
                    output_hidden_states=transfer is not None and transfer.hidden_weight > 0,
                    output_attentions=transfer is not None and transfer.attention_weight > 0)
        loss = kd.loss(out.logits, labels, idx) if kd is not None else F.cross_entropy(out.logits, labels)
        if transfer is not None:
            loss = loss + transfer.loss(out, ids, mask)
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

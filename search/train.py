"""One training loop for teacher fine-tuning, distillation and pruning recovery, on the device `accel`
chose (the model moves there for the loop and comes back to the CPU afterwards).

Hand-written rather than transformers.Trainer: every use here is a short loop whose loss reads cached
teacher outputs by example index, which Trainer would need a custom subclass for.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import accel, families
from .errors import CandidateError
from .tasks import classification
from .tasks.data import Split

BATCH_SIZE = 32  # examples per distillation / recovery step
PROGRESS_EVERY_S = 30.0  # without a terminal (CI, logs): one progress line this often


@dataclass(frozen=True)
class KD:
    """Distillation on the teacher's cached outputs (the task type's kd_loss: soft targets + labels)."""

    teacher_outputs: torch.Tensor  # [N, ...], aligned with the training split
    temperature: float = 2.0
    alpha: float = 0.5
    task_type: object = classification

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        target = self.teacher_outputs[idx].to(outputs.device)
        return self.task_type.kd_loss(outputs.float(), target, labels, self.temperature, self.alpha)


class Transfer:
    """Intermediate-layer distillation (Jiao et al. 2020; Wang et al. 2020), from one teacher forward per batch:
    - hidden states: MSE between each student layer's output and the output of the teacher layer it was
      cut from, on the hidden dims the student kept;
    - attention: KL(teacher || student) of each kept head's attention distribution, per real query token.
    Teacher states are computed per batch: caching them would take ~1.4 GB for the default task."""

    def __init__(self, teacher, teacher_layers: list[int], keep_dims: torch.Tensor, teacher_heads: list[list[int]],
                 hidden_weight: float = 0.0, attention_weight: float = 0.0):
        self.teacher, self.layers, self.dims, self.heads = teacher.eval(), teacher_layers, keep_dims, teacher_heads
        self.hidden_weight, self.attention_weight = hidden_weight, attention_weight
        self.family = families.of(teacher)

    def loss(self, out, features: dict) -> torch.Tensor:
        with torch.no_grad():
            t_out = self.family.forward(self.teacher, features, hidden_states=self.hidden_weight > 0,
                                        attentions=self.attention_weight > 0)
        real = self.family.token_mask(features)
        total = 0.0
        for s_layer, t_layer in enumerate(self.layers):
            if self.hidden_weight:  # hidden_states[0] is the embeddings' output
                target = t_out.hidden_states[t_layer + 1][..., self.dims.to(real.device)][real].float()
                total = total + self.hidden_weight * F.mse_loss(out.hidden_states[s_layer + 1][real].float(), target)
            if self.attention_weight:
                t_att = t_out.attentions[t_layer][:, self.heads[s_layer]].permute(0, 2, 1, 3)[real].float()  # [q, h, k]
                s_att = out.attentions[s_layer].permute(0, 2, 1, 3)[real].float()
                kl = (t_att * (t_att.clamp_min(1e-9).log() - s_att.clamp_min(1e-9).log())).sum(-1).mean()
                total = total + self.attention_weight * kl
        return total / len(self.layers)


class EarlyStopping:
    """Stop distilling when the distillation loss on held-out *training* rows (never validation) has not improved
    for `patience` checks, and keep the weights of the best check. Checked before the first step (the weights it
    starts from: best_step 0 means more training did not help), every `every_steps` steps and at the end.
    Hand-written: transformers' EarlyStoppingCallback needs its Trainer, which this loop does not use."""

    def __init__(self, split: Split, teacher_outputs: torch.Tensor, kd: KD, every_steps: int, patience: int):
        self.split, self.outputs, self.kd = split, teacher_outputs, kd
        self.every, self.patience = max(1, every_steps), patience
        self.best_loss, self.best_step, self.best_state, self.bad = math.inf, 0, None, 0
        self.checks: list[tuple[int, float]] = []
        self.stopped_at: int | None = None

    @torch.no_grad()
    def loss(self, model) -> float:
        family, total = families.of(model), 0.0
        model.eval()
        for start in range(0, len(self.split), 64):
            idx = torch.arange(start, min(start + 64, len(self.split)))
            features, labels = self.split.batch(idx)
            with accel.autocast():
                out = family.forward(model, accel.to_device(features)).outputs.float()
            target = self.outputs[idx].to(out.device)
            total += float(self.kd.task_type.kd_loss(out, target, labels.to(out.device), self.kd.temperature,
                                                     self.kd.alpha)) * len(idx)
        model.train()
        return total / len(self.split)

    def check(self, model, step: int, final: bool = False) -> bool:
        """Record the held-out loss after `step` steps; True when training should stop."""
        loss = self.loss(model)
        self.checks.append((step, loss))
        if loss < self.best_loss:
            self.best_loss, self.best_step, self.bad = loss, step, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.bad += 1
        if self.bad >= self.patience and not final:
            self.stopped_at = step
        return self.stopped_at is not None

    def restore(self, model) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def record(self, steps: int) -> dict:
        """What the trial stores: steps planned and run, where the held-out loss was best."""
        return {"steps_planned": steps, "steps_run": self.stopped_at or steps, "best_step": self.best_step,
                "holdout_loss_best": self.best_loss, "holdout_examples": len(self.split),
                "stopped_early": self.stopped_at is not None}


def train(model: torch.nn.Module, data: Split, *, steps: int, kd: KD | None = None, lr: float = 1e-4,
          batch_size: int = BATCH_SIZE, seed: int = 0, desc: str = "train", transfer: Transfer | None = None,
          task_type=classification, log=None, early: EarlyStopping | None = None) -> float:
    """Train for `steps` optimizer steps (cycling over seeded shuffles); returns the last mean loss.
    `log`: where a progress line goes every PROGRESS_EVERY_S when no terminal shows the bar. `early`: stop when
    its held-out loss stops improving, ending with its best weights."""
    if steps <= 0:
        return float("nan")
    family = families.of(model)
    acc = accel.accelerator()
    recent = []
    try:
        model.to(acc.device)
        if transfer is not None:
            transfer.teacher.to(acc.device)
        gen = torch.Generator().manual_seed(seed)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        warmup = max(1, steps // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
        model.train()
        order = torch.empty(0, dtype=torch.long)
        if early is not None:  # the weights it starts from are a candidate too: more training may only hurt
            early.check(model, 0, final=True)
        bar = tqdm(range(steps), desc=desc, leave=False, mininterval=2.0, disable=None)  # None: off without a TTY
        t0 = last = time.perf_counter()
        for step in bar:
            if len(order) < batch_size:
                order = torch.cat([order, torch.randperm(len(data), generator=gen)])
            idx, order = order[:batch_size], order[batch_size:]
            features, labels = data.batch(idx)
            features, labels = accel.to_device(features), labels.to(acc.device)
            with accel.autocast():
                out = family.forward(model, features,
                                     hidden_states=transfer is not None and transfer.hidden_weight > 0,
                                     attentions=transfer is not None and transfer.attention_weight > 0)
                loss = kd.loss(out.outputs, labels, idx) if kd is not None else task_type.loss(out.outputs.float(),
                                                                                                labels)
                if transfer is not None:
                    loss = loss + transfer.loss(out, features)
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            recent = (recent + [loss.item()])[-20:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", refresh=False)
            now = time.perf_counter()
            if log is not None and bar.disable and now - last >= PROGRESS_EVERY_S:
                last = now
                log(f"  {desc.strip()}: step {step + 1}/{steps}, {(step + 1) / (now - t0):.2f} steps/s, "
                    f"loss {sum(recent) / len(recent):.4f}, on {accel.describe()}")
            if early is not None and (step + 1) % early.every == 0 and step + 1 < steps and early.check(model, step + 1):
                break
        if early is not None:
            if early.stopped_at is None:
                early.check(model, steps, final=True)
            early.restore(model)
    except torch.cuda.OutOfMemoryError as exc:  # this recipe does not fit the GPU: a failed trial, not the run
        raise CandidateError(f"out of GPU memory while training ({desc.strip()}): "
                             f"{str(exc).splitlines()[0][:160]}") from None
    finally:
        model.eval()
        model.to("cpu")
        if transfer is not None:
            transfer.teacher.to("cpu")
        if accel.on_gpu():
            torch.cuda.empty_cache()
    return sum(recent) / len(recent)


def steps_for(n_examples: int, epochs: float, batch_size: int = BATCH_SIZE) -> int:
    return max(1, int(math.ceil(n_examples / batch_size * epochs)))


@torch.no_grad()
def outputs_of(model: torch.nn.Module, data: Split, batch_size: int = 64) -> torch.Tensor:
    """The model's task outputs over a split (fp32, on the CPU), computed on the training device."""
    family = families.of(model)
    model.eval()
    model.to(accel.device())
    out = []
    try:
        for start in range(0, len(data), batch_size):
            features, _ = data.batch(torch.arange(start, min(start + batch_size, len(data))))
            with accel.autocast():
                out.append(family.forward(model, accel.to_device(features)).outputs.float().cpu())
    finally:
        model.to("cpu")
    return torch.cat(out)

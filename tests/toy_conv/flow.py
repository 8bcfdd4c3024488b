"""The toy kind's flow: a convolutional teacher (16 channels) distilled into narrower students on synthetic 8x8
images of strokes, exported as ONNX, scored by onnxruntime on the validation split (the backend's `outputs`),
weights measured from the file, latency estimated from the target's spec (FLOPs over the fp32 peak) and labelled so.
It asks the core for nothing a flow does not get through flows/base.py."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from search import backends, confidence, flows
from search.errors import ConfigError
from search.flows.base import Flow, Start
from search.run_dir import PREDICTIONS, atomic_write_npy
from search.tasks import classification

from .inputs import PIXELS, Recipe

CLASSES = ("horizontal", "vertical", "diagonal", "cross")
TEACHER_CHANNELS = 16
MB = 2**20


@dataclass(frozen=True)
class ConvShape:
    family: str
    channels: int
    classes: int
    pixels: int

    @property
    def parameters(self) -> int:
        return self.channels * 9 + self.channels + self.channels * 4 * self.classes + self.classes

    @property
    def flops(self) -> int:  # one image: the 3x3 convolution, then the head over 2x2 pooled maps
        return 2 * self.pixels ** 2 * self.channels * 9 + 2 * self.channels * 4 * self.classes

    def activation_bytes(self, batch: int) -> int:
        return 4 * batch * (self.pixels ** 2 * (1 + self.channels) + self.channels * 4 + self.classes)


class ConvFamily:
    name = "toy_conv"

    @staticmethod
    def build(channels: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                             nn.Linear(channels * 4, len(CLASSES)))

    def shape_of(self, model) -> ConvShape:
        return ConvShape(self.name, model[0].out_channels, model[-1].out_features, PIXELS)


@dataclass
class Split:
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx):
        return {"pixels": self.images[idx]}, self.labels[idx]


def strokes(n: int, seed: int) -> Split:
    """Noisy 8x8 images of a horizontal stroke, a vertical one, a diagonal, or both of the first two."""
    g = np.random.default_rng(seed)
    x = g.normal(0, 0.4, (n, 1, PIXELS, PIXELS)).astype(np.float32)
    y = np.arange(n) % len(CLASSES)
    for i, c in enumerate(y):
        row, col = g.integers(1, PIXELS - 1, 2)
        if c in (0, 3):
            x[i, 0, row, :] += 1.0
        if c in (1, 3):
            x[i, 0, :, col] += 1.0
        if c == 2:
            x[i, 0] += np.eye(PIXELS, dtype=np.float32)[:, ::g.choice([1, -1])]
    return Split(torch.from_numpy(x), torch.from_numpy(y))


@dataclass
class Prepared:
    task: object
    family: ConvFamily
    teacher: nn.Module
    train: Split
    val: Split
    teacher_logits: torch.Tensor


@dataclass
class Context:
    prepared: Prepared
    target: object
    threads: int
    seed: int
    backend: object
    task_type = classification
    limits = None  # the toy space needs no teacher limits to suggest

    @property
    def family(self):
        return self.prepared.family


def train(model: nn.Module, split: Split, epochs: int, seed: int, teacher_logits=None) -> nn.Module:
    """Cross-entropy, plus distillation on the teacher's logits (T = 2, alpha = 0.5) when given."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(epochs * 4):
        for idx in torch.randperm(len(split)).split(64):
            features, labels = split.batch(idx)
            out = model(features["pixels"])
            loss = F.cross_entropy(out, labels)
            if teacher_logits is not None:
                soft = F.kl_div(F.log_softmax(out / 2, -1), F.log_softmax(teacher_logits[idx] / 2, -1),
                                log_target=True, reduction="batchmean")
                loss = 0.5 * loss + 0.5 * 4 * soft
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


class ToyConv(Flow):
    NAME = "toy_conv"
    METRIC_COLUMNS = ("accuracy", "macro_f1", "memory_mb", "weight_mb", "p50_latency_ms", "p99_latency_ms",
                      "p99_latency_ms_upper", "latency_bound_method", "latency_source", "parameters",
                      "predicted_memory_mb", "predicted_p99_latency_ms", "elapsed_s")
    SUMMARY_KEYS = ("accuracy", "memory_mb", "p50_latency_ms", "p99_latency_ms", "latency_source")

    def prepare(self, task, cache_dir: Path, log, checked):
        data = strokes(task.examples, task.seed)
        cut = len(data) * 3 // 4
        train_split, val = Split(data.images[:cut], data.labels[:cut]), Split(data.images[cut:], data.labels[cut:])
        log("toy teacher: 16 channels, trained on the training split ...")
        teacher = train(ConvFamily.build(TEACHER_CHANNELS), train_split, epochs=3, seed=task.seed)
        with torch.no_grad():
            logits = teacher(train_split.images)
        return Prepared(task, ConvFamily(), teacher, train_split, val, logits)

    def prepare_run(self, prepared, target, space, cache_dir, threads, seed, log=print):
        ctx = Context(prepared, target, threads, seed, backends.get(target.device.runtime))
        smallest, _ = self.screen(ctx, Recipe(channels=min(space.channels), epochs=1))
        if smallest["predicted_memory_mb"] > target.budget.memory_mb:
            raise ConfigError(target.path, "budget.memory_mb", f"{target.budget.memory_mb} MB, but the smallest "
                                                               f"student needs {smallest['predicted_memory_mb']:.4f} MB")
        return ctx

    def resolve(self, ctx, recipe):
        return recipe

    def _latency(self, ctx, shape: ConvShape) -> tuple[float, float, float, str]:
        dev, batch = ctx.target.device, ctx.target.workload.batch_size
        p50 = batch * shape.flops / (dev.peak_tops["fp32"] * 1e12 * 0.5) * 1e3 + 0.02  # + 4 ops' overhead (5 us)
        p99 = p50 * dev.tail_factor
        upper, how = confidence.latency_bound(p99, (), "estimated", dev, ctx.target.budget.confidence)
        return p50, p99, upper, how

    def screen(self, ctx, recipe):
        shape = ConvShape(ConvFamily.name, recipe.channels, len(CLASSES), PIXELS)
        memory_mb = (4 * shape.parameters + shape.activation_bytes(ctx.target.workload.batch_size)) / MB
        _, p99, upper, _ = self._latency(ctx, shape)
        predicted = {"predicted_memory_mb": memory_mb, "predicted_p99_latency_ms": p99,
                     "predicted_p99_latency_ms_upper": upper}
        budget, reasons = ctx.target.budget, []
        if memory_mb > budget.memory_mb:
            reasons.append(f"predicted memory {memory_mb:.4f} MB > budget {budget.memory_mb} MB")
        if upper > budget.p99_latency_ms:
            reasons.append(f"estimated p99 bound {upper:.4f} ms > budget {budget.p99_latency_ms} ms")
        return predicted, reasons

    def _measure(self, ctx, model: nn.Module, workdir: Path) -> dict:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / ctx.backend.artifact_name
        torch.onnx.export(model, (torch.zeros(1, 1, PIXELS, PIXELS),), str(path), dynamo=False, input_names=["pixels"],
                          output_names=["scores"], dynamic_axes={"pixels": {0: "batch"}, "scores": {0: "batch"}})
        val = ctx.prepared.val
        outputs = ctx.backend.outputs(path, val, ctx.threads)  # onnxruntime runs the file that ships
        atomic_write_npy(workdir / PREDICTIONS, outputs.argmax(-1).astype(np.int32))
        shape = ctx.family.shape_of(model)
        weights = ctx.backend.weight_bytes(path)
        p50, p99, upper, how = self._latency(ctx, shape)
        return {**classification.evaluate(outputs, val.labels.numpy()), "eval_examples": len(val),
                "weight_mb": weights / MB,
                "memory_mb": (weights + shape.activation_bytes(ctx.target.workload.batch_size)) / MB,
                "p50_latency_ms": p50, "p99_latency_ms": p99, "p99_latency_ms_upper": upper,
                "latency_bound_method": how, "latency_source": "estimated", "parameters": shape.parameters,
                "artifact": str(path)}

    def run_candidate(self, ctx, recipe, workdir, log=print, more=None):
        p = ctx.prepared
        student = train(ConvFamily.build(recipe.channels), p.train, recipe.epochs, ctx.seed, p.teacher_logits)
        return self._measure(ctx, student, workdir)

    def measure_teacher(self, ctx, workdir):
        return self._measure(ctx, ctx.prepared.teacher, workdir)

    def warm_start(self, ctx, trials: int) -> list[Start]:
        """The narrowest student first: the cheapest that could ship."""
        return [Start({"conv.channels": 2, "train.epochs": 3}, {"warm_start": True, "largest_admitted": False})]

    def resolved_budget(self, target, teacher: dict) -> dict:
        return {**flows.get("classification").resolved_budget(target, teacher), "flow": self.NAME}

    def metrics_text(self, m: dict, source: str) -> str:
        return f"acc {m['accuracy']:.4f}  p99 {m['p99_latency_ms']:.4f} ms{source}  mem {m['memory_mb']:.4f} MB"

    def run_inputs(self, rd, prepared, target) -> dict:
        atomic_write_npy(rd.labels, prepared.val.labels.numpy())  # the accuracy bound's evidence
        return {"classes": list(CLASSES), **self.workload_inputs(target)}

    def workload_inputs(self, target) -> dict:
        return {"batch_size": target.workload.batch_size}


flows.register(ToyConv())

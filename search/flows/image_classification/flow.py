"""Image classification shipped as ONNX for onnxruntime: EfficientNet-Lite0 (ImageNet weights, fine-tuned once per
task and cached) cut by the space's knobs: the least important residual MBConv blocks dropped per stage, set to the
student's input resolution, a share of its channels cut (torch-pruning's dependency graph, by weight norm); recovered
by distillation on the teacher's cached outputs (the training images resized to the student's size, same order),
exported in fp32 or static int8 (QDQ convolutions, per-channel weights, ranges from training images), and measured as
it ships: accuracy of the artifact on the validation split (onnxruntime), weight bytes from the file, latency and peak
memory by the backend's probe (or the roofline where the target's latency is estimated; convolutions are priced as
linears until their classes are fitted).

Issue 31: fp16, the convolution cost model, the export of a vision run and the NNCF bench come next."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ... import backends, confidence, families
from ...candidate import QuantParams
from ...errors import ConfigError
from ...locks import file_lock, latency_lease
from ...measure import memory, roofline
from ...run_dir import PREDICTIONS, atomic_write_npy
from ...tasks import classification
from ...tasks.teacher import file_sha256
from ...train import KD, outputs_of, steps_for, train
from .. import get, register
from ..base import Flow, Start
from .data import ImageSplit, Preprocessing
from .inputs import ImageSpace, ImageTask, Recipe

QUANT = {"fp32": QuantParams(), "int8_static": QuantParams(bits=8, activations="static_int8")}
CALIBRATION_IMAGES = 128  # training images whose activation ranges static int8 is calibrated on (MinMax)
IMPORTANCE_IMAGES = 64  # training images a depth cut's block importance is measured on
RECOVERY_LEARNING_RATE = 1e-3  # AdamW, cosine; a CNN's recovery takes larger steps than a transformer's
TEACHER_FILE, OUTPUTS_FILE, META_FILE = "model.safetensors", "train_outputs.safetensors", "teacher.json"


@dataclass
class Prepared:
    task: ImageTask
    family: object
    teacher: torch.nn.Module
    classes: list
    train: ImageSplit
    val: ImageSplit
    teacher_outputs: torch.Tensor  # on the training split, aligned by index


@dataclass
class Context:
    prepared: Prepared
    target: object
    cache_dir: Path
    threads: int
    seed: int
    backend: object
    space: ImageSpace = field(default_factory=ImageSpace)
    shapes: dict = field(default_factory=dict)  # (channels, depth, resolution) -> the cut model's shape (cached)
    splits: dict = field(default_factory=dict)  # resolution -> (train, val) at that size (cached)
    task_type = classification
    limits = None  # the channel space needs no teacher limits to suggest

    @property
    def family(self):
        return self.prepared.family


# -- the task: data and the fine-tuned teacher ---------------------------------------------------------------------
def _splits(task: ImageTask, checked, mean, std, input_name: str):
    if task.data is None:
        from . import fashion_mnist

        train_split, val = fashion_mnist.splits(
            fashion_mnist.FashionMnistTask(resolution_px=task.resolution_px, train_examples=task.train_examples,
                                           validation_examples=task.validation_examples, split_seed=task.split_seed),
            mean, std, input_name)
        return fashion_mnist.classes(), train_split, val
    from .image_files import splits

    pre = Preprocessing((task.resolution_px,) * 2 if task.resize else None, tuple(mean), tuple(std))
    return splits(checked, pre, task.validation_fraction, task.split_seed, input_name, task.source,
                  max_train=task.train_examples)


def _teacher_key(task: ImageTask, train_split: ImageSplit, classes: list) -> str:
    """The fine-tuned teacher depends on the task's settings and on the exact training pixels and labels."""
    h = hashlib.sha256(json.dumps({k: str(v) for k, v in asdict(task).items() if k not in ("name", "source")},
                                  sort_keys=True).encode())
    h.update(train_split.images.numpy().tobytes())
    h.update(train_split.labels.numpy().tobytes())
    h.update(json.dumps(classes).encode())
    if task.teacher_weights is not None:
        h.update(file_sha256(task.teacher_weights).encode())
    return h.hexdigest()[:16]


def _fine_tuned(task: ImageTask, family, classes: list, train_split: ImageSplit, resolution_px: int, cache_dir: Path,
                log) -> tuple[torch.nn.Module, torch.Tensor]:
    """The teacher fine-tuned on the training split once per task and cached (safetensors), with its outputs."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    teacher = family.at_resolution(family.load_weights(cache_dir, task.teacher_weights, len(classes), task.source),
                                   resolution_px)
    cached = cache_dir / f"teacher-{_teacher_key(task, train_split, classes)}"
    with file_lock(cached.with_name(f"{cached.name}.lock")):  # one worker fine-tunes; the others load it
        if (cached / OUTPUTS_FILE).is_file():
            try:
                teacher.load_state_dict(load_file(str(cached / TEACHER_FILE)))
                outputs = load_file(str(cached / OUTPUTS_FILE))["outputs"]
                log(f"teacher loaded from cache {cached}")
                return teacher.eval(), outputs
            except (SafetensorError, OSError, RuntimeError, KeyError) as exc:  # damaged, or not this model's
                log(f"warning: teacher cache unreadable ({' '.join(str(exc).split())[:120]}); fine-tuning again")
                shutil.rmtree(cached, ignore_errors=True)
        steps = steps_for(len(train_split), task.finetune_epochs)
        log(f"fine-tuning the image teacher at {resolution_px} px: {steps} steps ({task.finetune_epochs:g} epochs on "
            f"{len(train_split)} images); cached afterwards")
        t0 = time.perf_counter()
        train(teacher, train_split, steps=steps, lr=task.finetune_learning_rate, seed=task.split_seed,
              desc="teacher fine-tune", log=log)
        log(f"teacher fine-tuned in {time.perf_counter() - t0:.0f} s")
        outputs = outputs_of(teacher.eval(), train_split)
        tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(tmp / TEACHER_FILE))
        save_file({"outputs": outputs.contiguous()}, str(tmp / OUTPUTS_FILE))
        (tmp / META_FILE).write_text(json.dumps({"task": task.name, "resolution_px": resolution_px,
                                                 "classes": classes}, indent=1))
        shutil.rmtree(cached, ignore_errors=True)
        tmp.rename(cached)  # atomic: a crash mid-write never leaves a half cache
        return teacher.eval(), outputs


# -- one candidate -------------------------------------------------------------------------------------------------
def _resolution(ctx: Context, recipe: Recipe) -> int:
    return recipe.resolution_px or ctx.family.shape_of(ctx.prepared.teacher).resolution_px


def _splits_at(ctx: Context, resolution_px: int) -> tuple[ImageSplit, ImageSplit]:
    """Training and validation images at the student's resolution (same order: the teacher's outputs align)."""
    if resolution_px not in ctx.splits:
        p = ctx.prepared
        ctx.splits[resolution_px] = (p.train.at_size(resolution_px), p.val.at_size(resolution_px))
    return ctx.splits[resolution_px]


def _cut(ctx: Context, recipe: Recipe):
    """The teacher's copy with the least important blocks dropped (importance at the task's resolution), set to the
    student's resolution, then its channels cut (the dependency graph traced at that resolution)."""
    p = ctx.prepared
    student = copy.deepcopy(p.teacher)
    if recipe.depth_keep_ratio < 1:
        features, _ = p.train.batch(torch.arange(min(IMPORTANCE_IMAGES, len(p.train))))
        p.family.cut_depth(student, recipe.depth_keep_ratio, features)
    student = p.family.at_resolution(student, _resolution(ctx, recipe))
    return p.family.cut_channels(student, recipe.channel_keep_ratio)


def _shape(ctx: Context, recipe: Recipe):
    """The cut model's shape (a cut takes ~0.5 s on the full model: once per distinct cut)."""
    key = (recipe.channel_keep_ratio, recipe.depth_keep_ratio, _resolution(ctx, recipe))
    if key not in ctx.shapes:
        ctx.shapes[key] = ctx.family.shape_of(_cut(ctx, recipe))
    return ctx.shapes[key]


def _latency(ctx: Context, shape, quant: QuantParams, artifact: Path | None):
    wl, dev = ctx.target.workload, ctx.target.device
    if dev.latency == "estimated":
        return roofline.estimate(shape, quant, dev, wl.batch_size, 0, False)
    with latency_lease(ctx.cache_dir / "locks", dev.runner):  # one measurement per host/device at a time
        return ctx.backend.measure_latency(artifact, shape, wl.batch_size, 0, dev.threads, runner=dev.runner)


def _measure(ctx: Context, model: torch.nn.Module, workdir: Path, quant: str = "fp32") -> dict:
    wl = ctx.target.workload
    shape = ctx.family.shape_of(model)
    train_split, val = _splits_at(ctx, shape.resolution_px)
    calibration = None
    if QUANT[quant].scheme is not QUANT["fp32"].scheme:  # ranges from training images, never the validation ones
        calibration, _ = train_split.batch(torch.arange(min(CALIBRATION_IMAGES, len(train_split))))
    path = ctx.backend.build(model, QUANT[quant], workdir, calibration)
    outputs = ctx.backend.outputs(path, val, ctx.threads)  # onnxruntime scores the file that ships
    atomic_write_npy(path.parent / PREDICTIONS, outputs.argmax(-1).astype(np.int32))  # the accuracy bound's evidence
    weights = ctx.backend.weight_bytes(path)
    activations = ctx.family.activation_bytes(shape, wl.batch_size)
    lat = _latency(ctx, shape, QUANT[quant], path)
    memory_mb = lat.peak_rss_mb if lat.peak_rss_mb is not None else (weights + activations) / memory.MB
    upper, how = confidence.latency_bound(lat.p99_ms, lat.times_ms, lat.source, ctx.target.device,
                                          ctx.target.budget.confidence)
    return {**classification.evaluate(outputs, val.labels.numpy()), "eval_examples": len(val),
            "memory_mb": memory_mb, "weight_mb": weights / memory.MB, "activation_mb_estimated": activations / memory.MB,
            "peak_rss_mb": lat.peak_rss_mb, "p50_latency_ms": lat.p50_ms, "p99_latency_ms": lat.p99_ms,
            "p99_latency_ms_upper": upper, "latency_bound_method": how, "latency_spread": lat.spread,
            "latency_noisy": lat.noisy, "latency_source": lat.source,
            "parameters": sum(p.numel() for p in model.parameters()), "shape": asdict(shape), "artifact": str(path),
            "quant": quant, "kept_blocks": ctx.family.kept_blocks(model)}


class _Fixed:
    """A trial stand-in that answers every suggestion from fixed parameters (the screen of the cheapest recipe)."""

    def __init__(self, params: dict):
        self.params = params

    def suggest_float(self, name, *a, **k):
        return self.params[name]

    suggest_int = suggest_categorical = suggest_float


class ImageClassification(Flow):
    NAME = "image_classification"
    METRIC_COLUMNS = ("accuracy", "macro_f1", "memory_mb", "weight_mb", "activation_mb_estimated", "peak_rss_mb",
                      "p50_latency_ms", "p99_latency_ms", "latency_spread", "latency_noisy", "latency_source",
                      "parameters", "predicted_memory_mb", "elapsed_s", "p99_latency_ms_upper",
                      "latency_bound_method", "eval_examples")
    SUMMARY_KEYS = ("accuracy", "memory_mb", "p50_latency_ms", "p99_latency_ms", "latency_source")

    def prepare(self, task: ImageTask, cache_dir: Path, log, checked):
        family = families.get(task.family)
        resolution_px = task.resolution_px or int(checked.pixels.shape[-1])  # no resize: the images' own size
        teacher_mean, teacher_std = family.normalisation()  # what its weights expect, unless the task names one
        mean, std = task.mean or teacher_mean, task.std or teacher_std
        classes, train_split, val = _splits(task, checked, mean, std, family.input_name)
        log(f"task {task.name}: {len(train_split)} train / {len(val)} validation images, {len(classes)} classes, "
            f"{resolution_px} px (split seed {task.split_seed})")
        teacher, outputs = _fine_tuned(task, family, classes, train_split, resolution_px, cache_dir, log)
        return Prepared(task, family, teacher, classes, train_split, val, outputs)

    def prepare_run(self, prepared, target, space, cache_dir, threads, seed, log=print):
        ctx = Context(prepared, target, cache_dir, threads, seed, backends.get(target.device.runtime), space=space)
        smallest, _ = self.screen(ctx, space.suggest(_Fixed(space.cheapest())))
        if smallest["predicted_memory_mb"] > target.budget.memory_mb:
            raise ConfigError(target.path, "budget.memory_mb", f"{target.budget.memory_mb} MB, but the narrowest "
                                                               f"student needs {smallest['predicted_memory_mb']:.2f} MB")
        return ctx

    def resolve(self, ctx, recipe: Recipe) -> Recipe:
        return recipe

    def screen(self, ctx, recipe: Recipe) -> tuple[dict, list[str]]:
        """Predicted memory: fp32 weights as onnxruntime stores them plus the largest feature maps; a measured
        target's latency is not predicted yet (the convolution cost model comes next)."""
        shape, wl, budget = _shape(ctx, recipe), ctx.target.workload, ctx.target.budget
        memory_mb = (ctx.backend.predicted_weight_bytes(shape, QUANT[recipe.quant])
                     + ctx.family.activation_bytes(shape, wl.batch_size)) / memory.MB
        reasons = [f"predicted memory {memory_mb:.2f} MB > budget {budget.memory_mb} MB"] \
            if memory_mb > budget.memory_mb else []
        return {"predicted_memory_mb": memory_mb}, reasons

    def run_candidate(self, ctx, recipe: Recipe, workdir: Path, log=print, more=None) -> dict:
        p = ctx.prepared
        student = _cut(ctx, recipe)
        train_split, _ = _splits_at(ctx, _resolution(ctx, recipe))
        train(student, train_split, steps=steps_for(len(train_split), recipe.epochs), kd=KD(p.teacher_outputs),
              lr=RECOVERY_LEARNING_RATE, seed=ctx.seed, desc="recovery", log=log)
        return _measure(ctx, student.eval(), workdir, recipe.quant)

    def measure_teacher(self, ctx, workdir: Path) -> dict:
        return _measure(ctx, ctx.prepared.teacher, workdir)

    def warm_start(self, ctx, trials: int) -> list[Start]:
        """The cheapest student first: the narrowest, shallowest, smallest, most quantized that could ship."""
        return [Start(ctx.space.cheapest())]

    def resolved_budget(self, target, teacher: dict) -> dict:
        """A classifier's budget (an accuracy floor made absolute from the teacher's), as the text kind words it."""
        return {**get(classification.NAME).resolved_budget(target, teacher), "flow": self.NAME}

    def metrics_text(self, m: dict, source: str) -> str:
        return (f"acc {m['accuracy']:.4f}  p50 {m['p50_latency_ms']:.2f} ms  p99 {m['p99_latency_ms']:.2f} ms{source}  "
                f"mem {m['memory_mb']:.2f} MB")

    def run_inputs(self, rd, prepared, target) -> dict:
        atomic_write_npy(rd.labels, prepared.val.labels.numpy())  # what each trial's predictions are scored against
        pre = prepared.val.preprocessing  # what DEPLOY.md's snippet must repeat
        resolution_px = prepared.family.shape_of(prepared.teacher).resolution_px
        return {"classes": list(prepared.classes), "resolution_px": resolution_px,
                "preprocessing": {"size_px": pre.size_px, "mean": list(pre.mean), "std": list(pre.std),
                                  "resample": pre.resample}, **self.workload_inputs(target)}

    def workload_inputs(self, target) -> dict:
        return {"batch_size": target.workload.batch_size}


register(ImageClassification())

"""The toy kind's inputs: onnxruntime targets with a batch-only workload and a classifier's budget (an accuracy
floor), one built-in task (synthetic 8x8 images of strokes) and a space of student widths and epochs."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from search.exploit import Exploit
from search.flows.text_classification.inputs import read_budget  # noqa: F401  (an accuracy floor, as any classifier)
from search.rungs import Promotion

RUNTIMES = ("onnxruntime",)
BUILTIN_TASKS = ("strokes",)
DEFAULT_SPACE = "toy"
DESCRIPTION = "toy image-classification"
EXAMPLE_TARGET = "a target with runtime onnxruntime"
TASK_HINT = "--task strokes"
PIXELS = 8


@dataclass(frozen=True)
class ImageWorkload:
    batch_size: int  # images per inference; their size is the task's (PIXELS x PIXELS)


def read_workload(wl) -> ImageWorkload:
    return ImageWorkload(batch_size=wl.number("batch_size", lo=1, hi=4096, integer=True))


@dataclass(frozen=True)
class StrokesTask:
    name: str = "strokes"
    source: str = "<toy strokes task>"
    examples: int = 600
    seed: int = 0


@dataclass(frozen=True)
class Recipe:
    channels: int  # convolution channels of the student (the teacher has 16)
    epochs: int

    def label(self) -> str:
        return f"conv{self.channels} e{self.epochs}"


@dataclass(frozen=True)
class ToySpace:
    path: Path = Path("<toy space>")
    channels: tuple = (2, 16)
    promote: Promotion = field(default_factory=Promotion)
    exploit: Exploit = field(default_factory=Exploit)

    def suggest(self, trial, limits=None) -> Recipe:
        return Recipe(channels=trial.suggest_int("conv.channels", *self.channels, step=2),
                      epochs=trial.suggest_int("train.epochs", 1, 3))


def load_task(arg):
    return StrokesTask()


def load_space(arg):
    return ToySpace()


def check(task, space, target):
    return None

"""What an image-classification run reads before anything is loaded: onnxruntime targets with a batch-of-images
workload and a classifier's budget (an accuracy floor), the built-in Fashion-MNIST task or an image task file, and
the space of students. Light: target files are read through it.

An image task file:
    task_type: image_classification
    data:
      path: images/            # one subfolder per class, or a .csv/.parquet table (relative to this file)
      image_column: image      # tables: image paths (relative to the table) or embedded images
      label_column: label
    teacher: weights.pth       # optional: EfficientNet-Lite0 ImageNet weights (a .pth of tensors, lukemelas names,
                               # or .safetensors); default: the registry package's
    preprocessing:             # optional
      resize: [64, 64]         # [height, width]; without it every image must have one size and channel count
      mean: [0.5, 0.5, 0.5]    # on pixels scaled to [0, 1]; default: what the teacher's weights expect
      std: [0.5, 0.5, 0.5]
    validation_fraction: 0.2   # drawn from the data, seeded and stratified
    split_seed: 0
    finetune_epochs: 2
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ...exploit import Exploit
from ...rungs import Promotion
from ..text_classification.inputs import read_budget  # noqa: F401  (an accuracy floor, as any classifier)

RUNTIMES = ("onnxruntime",)
BUILTIN_TASKS = ("fashion_mnist",)
DEFAULT_SPACE = "vision"  # spaces/vision.yaml; `channels`: the channel knob alone
DESCRIPTION = "image classification"
EXAMPLE_TARGET = "local_cpu_vision"  # also jetson_orin_vision, raspberry_pi5_vision
TASK_HINT = "--task fashion_mnist, or a task file with task_type: image_classification"
FAMILY = "efficientnet_lite"  # the teacher's family: EfficientNet-Lite0, the only image teacher offline


@dataclass(frozen=True)
class ImageWorkload:
    batch_size: int  # images per inference
    # the square images the device is handed (height = width); the task's input resolution must equal it, a student
    # may run at less (resized). None: whatever the task's resolution is
    image_size_px: int | None = None


def read_workload(wl) -> ImageWorkload:
    if wl.has("sequence_length"):  # the one key every text target has: say what the file is, not "unknown key"
        raise wl.error("sequence_length", "this is a text target (a sequence length); an image task needs an image "
                                          f"target (workload: batch_size, image_size_px), e.g. --target "
                                          f"{EXAMPLE_TARGET}")
    return ImageWorkload(batch_size=wl.number("batch_size", lo=1, hi=4096, integer=True),
                         image_size_px=wl.number("image_size_px", default=None, lo=8, hi=1024, integer=True))


@dataclass(frozen=True)
class ImageTask:
    name: str
    source: str  # the task file, or the built-in task's name in brackets
    data: object | None  # image_files.ImageData; None: the built-in Fashion-MNIST
    resolution_px: int  # the model's input height = width
    mean: tuple | None = None  # None: the teacher's normalisation
    std: tuple | None = None
    resize: bool = True  # False: the images are used at their own (square) size
    validation_fraction: float = 0.2  # the user's data
    train_examples: int | None = 6000  # at most this many training images (the built-in task draws this many)
    validation_examples: int = 2000  # the built-in task's validation images (drawn from its training files)
    split_seed: int = 0
    finetune_epochs: float = 2.0
    finetune_learning_rate: float = 1e-3
    family: str = FAMILY
    teacher_weights: Path | None = None  # None: the registry package's ImageNet weights


def builtin_task(name: str = "fashion_mnist") -> ImageTask:
    from .fashion_mnist import RESOLUTION_PX

    return ImageTask(name=name, source=f"<built-in {name} task>", data=None, resolution_px=RESOLUTION_PX)


def load_task(arg: str | None) -> ImageTask:
    if arg is None or arg in BUILTIN_TASKS:
        return builtin_task()
    from ...schema import Reader, load_yaml, resolve
    from ...tasks import TASKS_DIR, resolve_path
    from .image_files import ImageData

    path = resolve(arg, TASKS_DIR)
    r = Reader(path, load_yaml(path, "task"))
    r.string("task_type", choices=("image_classification",))
    name = r.string("name", default=path.stem)
    data_r = r.section("data")
    data = ImageData(resolve_path(path.parent, data_r.string("path"), data_r, "path"),
                     data_r.string("image_column", default="image"), data_r.string("label_column", default="label"))
    data_r.done()
    weights = resolve_path(path.parent, r.string("teacher"), r, "teacher") if r.has("teacher") else None
    size, mean, std = None, None, None
    if r.has("preprocessing"):
        pre = r.section("preprocessing")
        size = _pair(pre, "resize") if pre.has("resize") else None
        mean = _triple(pre, "mean") if pre.has("mean") else None
        std = _triple(pre, "std") if pre.has("std") else None
        if std is not None and min(std) <= 0:
            raise pre.error("std", f"got {list(std)}; every std must be > 0")
        pre.done()
    if size is not None and size[0] != size[1]:
        raise r.error("preprocessing.resize", f"got {list(size)}; the image teacher takes square inputs for now: "
                                              "give [N, N]")
    task = ImageTask(
        name=name, source=str(path), data=data, resolution_px=size[0] if size else 0, mean=mean, std=std,
        resize=size is not None,
        validation_fraction=r.number("validation_fraction", default=0.2, lo=0.05, hi=0.5),
        train_examples=r.number("max_train_examples", default=None, lo=10, integer=True),
        split_seed=r.number("split_seed", default=0, lo=0, integer=True),
        finetune_epochs=r.number("finetune_epochs", default=2.0, lo=0, hi=100),
        finetune_learning_rate=r.number("finetune_learning_rate", default=1e-3, lo=0, lo_open=True, hi=1),
        teacher_weights=weights)
    r.done()
    return task


def _pair(r, key: str) -> tuple:
    value = r.raw(key)
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and 8 <= v <= 1024 for v in value)):
        raise r.error(key, f"got {value!r}; give [HEIGHT, WIDTH] in pixels, each an integer in [8, 1024]")
    return tuple(value)


def _triple(r, key: str) -> tuple:
    value = r.raw(key)
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
        raise r.error(key, f"got {value!r}; give three numbers, one per RGB channel, for pixels scaled to [0, 1]")
    return tuple(float(v) for v in value)


QUANT_SCHEMES = ("fp32", "int8_static")  # int8_static: QDQ convolutions, per-channel weights, calibrated ranges


@dataclass(frozen=True)
class Recipe:
    channel_keep_ratio: float  # share of each prunable channel group kept (1.0: the teacher's widths)
    epochs: float  # recovery by distillation on the teacher's outputs
    depth_keep_ratio: float = 1.0  # share of each stage's MBConv blocks kept (the least important residual ones go)
    resolution_px: int | None = None  # the student's input height = width; None: the task's
    quant: str = "fp32"  # one of QUANT_SCHEMES

    def label(self) -> str:
        extra = (f" d{self.depth_keep_ratio:g}" if self.depth_keep_ratio != 1 else "") + \
            (f" {self.resolution_px}px" if self.resolution_px else "") + (f" {self.quant}" if self.quant != "fp32" else "")
        return f"keep{self.channel_keep_ratio:g}{extra} e{self.epochs:g}"


@dataclass(frozen=True)
class ImageSpace:
    """Ranges of every image knob: (low, high, step) for the numeric ones (ordered, for TPE), the quantization
    schemes as choices. The built-in `channels` space is the channel knob alone, at the task's resolution, in fp32."""

    path: Path = Path("<built-in channels space>")
    channel_keep_ratio: tuple = (0.25, 1.0, 0.25)  # low, high, step
    epochs: tuple = (1, 2)
    depth_keep_ratio: tuple = (1.0, 1.0, 0.25)  # low, high, step: (1, 1) keeps every block
    resolution_px: tuple | None = None  # low, high, step; None: the task's resolution only
    quant: tuple = ("fp32",)
    promote: Promotion = field(default_factory=Promotion)  # one rung, no variants (the engine's defaults)
    exploit: Exploit = field(default_factory=Exploit)

    def suggest(self, trial, limits=None) -> Recipe:
        low, high, step = self.channel_keep_ratio
        recipe = Recipe(channel_keep_ratio=trial.suggest_float("prune.channel_keep_ratio", low, high, step=step),
                        epochs=trial.suggest_int("train.epochs", *self.epochs))
        if self.depth_keep_ratio[0] < self.depth_keep_ratio[1]:
            recipe = replace(recipe, depth_keep_ratio=trial.suggest_float("prune.depth_keep_ratio",
                                                                          *self.depth_keep_ratio[:2],
                                                                          step=self.depth_keep_ratio[2]))
        if self.resolution_px is not None:
            low, high, step = self.resolution_px
            recipe = replace(recipe, resolution_px=trial.suggest_int("input.resolution_px", low, high, step=step))
        if len(self.quant) > 1:
            recipe = replace(recipe, quant=trial.suggest_categorical("quant.scheme", list(self.quant)))
        return recipe

    def cheapest(self) -> dict:
        """The warm start's parameters: the narrowest, shallowest, smallest, most quantized student."""
        params = {"prune.channel_keep_ratio": self.channel_keep_ratio[0], "train.epochs": self.epochs[0]}
        if self.depth_keep_ratio[0] < self.depth_keep_ratio[1]:
            params["prune.depth_keep_ratio"] = self.depth_keep_ratio[0]
        if self.resolution_px is not None:
            params["input.resolution_px"] = self.resolution_px[0]
        if len(self.quant) > 1:
            params["quant.scheme"] = self.quant[-1]
        return params


def load_space(arg: str | None) -> ImageSpace:
    """The built-in `channels` space, or a space file (spaces/vision.yaml; default: that one):
        prune: {channel_keep_ratio: [low, high, step], depth_keep_ratio: [low, high, step]}
        input: {resolution_px: [low, high, step]}   # at most the task's resolution (checked when the task is read)
        quant: {schemes: [fp32, int8_static]}
        train: {epochs: [low, high]}"""
    from ...schema import Reader, load_yaml, resolve
    from ...space import SPACES_DIR

    if arg == "channels":
        return ImageSpace()
    path = resolve(arg or DEFAULT_SPACE, SPACES_DIR)
    r = Reader(path, load_yaml(path, "space"))
    r.string("kind", choices=("image_classification",))
    prune = r.section("prune")
    channel = _range(prune, "channel_keep_ratio", 0.05, 1.0)
    depth = _range(prune, "depth_keep_ratio", 0.1, 1.0) if prune.has("depth_keep_ratio") else (1.0, 1.0, 0.25)
    prune.done()
    resolution = None
    if r.has("input"):
        inp = r.section("input")
        resolution = tuple(int(v) for v in _range(inp, "resolution_px", 8, 1024, integer=True))
        inp.done()
    quant = ("fp32",)
    if r.has("quant"):
        q = r.section("quant")
        quant = tuple(q.raw("schemes"))
        if not quant or any(v not in QUANT_SCHEMES for v in quant) or len(set(quant)) != len(quant):
            raise q.error("schemes", f"got {list(quant)}; a list of distinct schemes from {list(QUANT_SCHEMES)}")
        q.done()
    epochs = (1, 2)
    if r.has("train"):
        t = r.section("train")
        value = t.raw("epochs")
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value)
                and 0 <= value[0] <= value[1] <= 20):
            raise t.error("epochs", f"got {value!r}; give [low, high], integers with 0 <= low <= high <= 20")
        epochs = tuple(value)
        t.done()
    r.done()
    return ImageSpace(path=path, channel_keep_ratio=channel, epochs=epochs, depth_keep_ratio=depth,
                      resolution_px=resolution, quant=quant)


def _range(r, key: str, lo: float, hi: float, integer: bool = False) -> tuple:
    value = r.raw(key)
    kind = int if integer else (int, float)
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, kind) for v in value)
            and lo <= value[0] <= value[1] <= hi and value[2] > 0
            and abs((value[1] - value[0]) / value[2] - round((value[1] - value[0]) / value[2])) < 1e-9):
        what = "integers" if integer else "numbers"
        raise r.error(key, f"got {value!r}; give [low, high, step], {what} with {lo:g} <= low <= high <= {hi:g} and "
                           "high - low a whole number of steps")
    return tuple(float(v) if not integer else int(v) for v in value)


def check(task: ImageTask, space, target):
    """The data read and checked before anything is loaded (returned: prepare reuses it); the built-in task's idx
    files present; teacher weights a task file names read as tensors (a file holding code is refused here)."""
    if space.resolution_px is not None and task.resolution_px and space.resolution_px[1] > task.resolution_px:
        from ...errors import ConfigError

        raise ConfigError(space.path, "input.resolution_px", f"up to {space.resolution_px[1]} px, but the task "
                                                             f"{task.name} is at {task.resolution_px} px; a student "
                                                             "runs at most at the task's resolution: lower it")
    if task.teacher_weights is not None:
        from ...families.efficientnet_lite import read_tensors

        read_tensors(task.teacher_weights, task.source, "teacher")
    if task.data is None:
        from .fashion_mnist import FOLDER, NAME, read_idx

        read_idx(FOLDER / "train-labels-idx1-ubyte.gz")  # a missing package is one line now, not after the teacher
        _same_size(task, task.resolution_px, target)
        return NAME
    from ...errors import ConfigError
    from .image_files import read_images

    images = read_images(task.data, (task.resolution_px,) * 2 if task.resize else None, task.source)
    h, w = images.pixels.shape[-2:]
    if h != w:
        raise ConfigError(task.source, "preprocessing.resize", f"the images are {h}x{w}; the image teacher takes "
                                                               "square inputs for now: give `resize: [N, N]`")
    _same_size(task, int(h), target)
    return images


def _same_size(task: ImageTask, resolution_px: int, target) -> None:
    """The teacher runs at the size the target's device is handed: a task at another size is refused, not resized
    behind the user's back (the fine-tuned teacher, the budgets and the latency all depend on it)."""
    wanted = getattr(target.workload, "image_size_px", None)
    if wanted is not None and wanted != resolution_px:
        from ...errors import ConfigError

        fix = "give a target at that size" if task.data is None else \
            f"give the task `preprocessing: {{resize: [{wanted}, {wanted}]}}` or a target at {resolution_px} px"
        raise ConfigError(target.path, "workload.image_size_px", f"{wanted}, but the task {task.name} gives "
                                                                 f"{resolution_px}x{resolution_px} images; {fix}")

"""The built-in image task: Fashion-MNIST (70,000 28x28 grayscale images of 10 kinds of clothing; MIT) from the
idx.gz files of Debian's `dataset-fashion-mnist` (`make setup` installs it).

The validation split is drawn from the 60,000 training images (seeded, stratified); the official 10,000 test images
are read only by `official_test_split`, for a final report, never by the search. Images are resized from 28 px to
RESOLUTION_PX (bilinear) and the grayscale channel is replicated to the teacher's three."""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError
from .data import ImageSplit, Preprocessing, resized, stratified_split

FOLDER = Path("/usr/share/datasets/fashion-mnist")  # where the Debian package puts the files (dpkg -L)
NAME = "fashion_mnist"
SOURCE = "<built-in fashion_mnist task>"
# 64 px: 12% of the teacher's 224-px compute (latency goes with the pixel count), enough for 28-px sources; the
# resolution knob of the space moves it per student
RESOLUTION_PX = 64


@dataclass(frozen=True)
class FashionMnistTask:
    name: str = NAME
    source: str = SOURCE
    resolution_px: int = RESOLUTION_PX
    train_examples: int | None = 6000  # drawn from the training files (stratified); None: all that remain
    validation_examples: int = 2000  # drawn from the training files, disjoint from the training examples
    split_seed: int = 0


def read_idx(path: Path) -> np.ndarray:
    """One idx.gz file (LeCun's format: zero bytes, a dtype code, the number of dimensions, big-endian int32 sizes,
    then the data). Written here because torchvision's reader takes no gzip and needs its dataset folder layout."""
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    try:
        raw = gzip.decompress(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(SOURCE, "data", f"{path} does not exist; install Debian's dataset-fashion-mnist "
                                          "(`make setup`, or apt-get install dataset-fashion-mnist)") from None
    except (OSError, EOFError) as exc:
        raise ConfigError(SOURCE, "data", f"{path} is not a readable gzip file ({exc}); reinstall "
                                          "dataset-fashion-mnist") from None
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\0\0" or code not in dtypes:
        raise ConfigError(SOURCE, "data", f"{path} is not an idx file; reinstall dataset-fashion-mnist")
    dims = np.frombuffer(raw, ">i4", ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtypes[code], int(np.prod(dims)), offset=4 + 4 * ndim)
    return data.reshape(dims)


def classes() -> list[str]:
    """The label names, as torchvision's dataset class lists them (no download: a class attribute)."""
    from ...torchvision_cpu import install

    install()
    from torchvision.datasets import FashionMNIST

    return list(FashionMNIST.classes)


def _split(images: np.ndarray, labels: np.ndarray, task: FashionMnistTask, preprocessing: Preprocessing,
           input_name: str) -> ImageSplit:
    pixels = resized(images, preprocessing.size_px, preprocessing.resample)
    return ImageSplit(torch.from_numpy(pixels), torch.from_numpy(labels.astype(np.int64)), preprocessing, input_name)


def splits(task: FashionMnistTask, mean: tuple, std: tuple, input_name: str) -> tuple[ImageSplit, ImageSplit]:
    """(train, validation), both from the training files; `mean`/`std`: the teacher's normalisation."""
    images, labels = read_idx(FOLDER / "train-images-idx3-ubyte.gz"), read_idx(FOLDER / "train-labels-idx1-ubyte.gz")
    train_idx, val_idx = stratified_split(labels, task.validation_examples, task.train_examples, task.split_seed)
    pre = Preprocessing((task.resolution_px, task.resolution_px), tuple(mean), tuple(std))
    return (_split(images[train_idx], labels[train_idx], task, pre, input_name),
            _split(images[val_idx], labels[val_idx], task, pre, input_name))


def official_test_split(task: FashionMnistTask, mean: tuple, std: tuple, input_name: str) -> ImageSplit:
    """The official 10,000 test images: for a final report only, never for selection."""
    pre = Preprocessing((task.resolution_px, task.resolution_px), tuple(mean), tuple(std))
    return _split(read_idx(FOLDER / "t10k-images-idx3-ubyte.gz"), read_idx(FOLDER / "t10k-labels-idx1-ubyte.gz"),
                  task, pre, input_name)

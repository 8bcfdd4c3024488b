"""Images as the image-classification kind trains and measures them: decoded once into uint8 arrays at the task's
resolution (resized with PIL, the library a deployed model's preprocessing also uses), normalised per batch with the
task's mean/std, grayscale replicated to the 3 channels the teacher takes; and the seeded, stratified validation
split taken from the training images."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MODEL_CHANNELS = 3  # what the teacher's stem takes; grayscale images are replicated into it


@dataclass(frozen=True)
class Preprocessing:
    """What the task does to an image before the model sees it (and DEPLOY.md repeats)."""

    size_px: tuple | None  # (height, width) to resize to; None: the images' own (then all must agree)
    mean: tuple  # per model channel, on pixel values scaled to [0, 1]
    std: tuple
    resample: str = "bilinear"  # PIL's filter for the resize


@dataclass
class ImageSplit:
    """Images [N, C, H, W] uint8 (C = 1 or 3) and labels [N]; `batch` gives the model's features."""

    images: torch.Tensor
    labels: torch.Tensor
    preprocessing: Preprocessing
    input_name: str  # the model's input (the family's export spec names it)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx) -> tuple[dict, torch.Tensor]:
        x = self.images[idx].float().div_(255.0)
        if x.shape[1] != MODEL_CHANNELS:
            x = x.expand(-1, MODEL_CHANNELS, -1, -1)
        mean = torch.tensor(self.preprocessing.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.preprocessing.std).view(1, -1, 1, 1)
        return {self.input_name: (x - mean) / std}, self.labels[idx]

    def at_size(self, size_px: int) -> "ImageSplit":
        """The same images, in the same order, resized to size_px x size_px (a student at a lower input resolution:
        the task's resize, then this one, as DEPLOY.md repeats)."""
        if tuple(self.images.shape[-2:]) == (size_px, size_px):
            return self
        x = self.images.numpy().transpose(0, 2, 3, 1)
        small = resized(x[..., 0] if x.shape[-1] == 1 else x, (size_px, size_px), self.preprocessing.resample)
        return ImageSplit(torch.from_numpy(small), self.labels, self.preprocessing, self.input_name)

    def take(self, idx) -> "ImageSplit":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ImageSplit(self.images[idx], self.labels[idx], self.preprocessing, self.input_name)


def resized(images: np.ndarray, size_px: tuple, resample: str = "bilinear") -> np.ndarray:
    """[N, H, W] or [N, H, W, C] uint8 -> [N, C, h, w] uint8 at `size_px` = (h, w), each image through PIL."""
    from PIL import Image

    fil = getattr(Image.Resampling, resample.upper())
    h, w = size_px
    out = [np.asarray(Image.fromarray(im).resize((w, h), fil)) for im in images]
    arr = np.stack(out)
    return arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2)


def stratified_split(labels: np.ndarray, validation: int, train: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): disjoint, each class in proportion, seeded (scikit-learn's splitter)."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    rest, val = train_test_split(index, test_size=validation, stratify=labels, random_state=seed)
    if train is not None and train < len(rest):
        rest, _ = train_test_split(rest, train_size=train, stratify=labels[rest], random_state=seed)
    return np.sort(rest), np.sort(val)

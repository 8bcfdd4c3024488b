"""The user's own images, as an image task file names them: an ImageFolder-style directory (one subfolder per class,
its name the label) or a CSV/Parquet table with an image column (paths relative to the table, or Parquet's embedded
image structs) and a label column. Every image is decoded by `datasets`' Image feature (PIL underneath), then
converted and resized as the task file's preprocessing says.

Refused in one line naming the task file, the key and the fix: a missing path, an empty class folder, an image file
that cannot be read or is truncated, and images of mixed sizes or channel counts when the task names no resize."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ConfigError
from ...tasks.data import table_suffix

TABLES = (".csv", ".parquet")
GRAYSCALE = ("1", "L", "I", "I;16", "F")  # PIL modes of one channel (a palette "P" holds colours: RGB)


@dataclass(frozen=True)
class ImageData:
    path: Path  # a class-per-subfolder directory, or a .csv / .parquet table
    image_column: str = "image"  # tables only
    label_column: str = "label"  # tables only


@dataclass
class Images:
    pixels: np.ndarray  # [N, C, H, W] uint8, C = 1 (grayscale) or 3 (RGB)
    labels: list  # per image, as the data names it (a folder name, a table's value)
    sources: list  # per image, where it came from (for messages)


def _folder_entries(folder: Path, file_for_errors) -> tuple[list, list]:
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ConfigError(file_for_errors, "data.path", f"{folder} has no class folders; put each class's images in "
                                                        "a subfolder named after the class")
    values, labels = [], []
    for d in classes:
        files = sorted(f for f in d.rglob("*") if f.is_file() and not f.name.startswith("."))
        if not files:
            raise ConfigError(file_for_errors, "data.path", f"class folder {d} is empty; put that class's images in "
                                                            "it, or remove the folder")
        values += [{"path": str(f), "bytes": None} for f in files]
        labels += [d.name] * len(files)
    return values, labels


def _table_entries(data: ImageData, file_for_errors) -> tuple[list, list]:
    from ...tasks.data import _load

    frame = _load(data.path, "data.path", file_for_errors)
    for key, column in (("data.image_column", data.image_column), ("data.label_column", data.label_column)):
        if column not in frame.columns:
            raise ConfigError(file_for_errors, key, f"column {column!r} not in {data.path.name}; columns are "
                                                    f"{', '.join(map(str, frame.columns))}")
    frame = frame[[data.image_column, data.label_column]].dropna()
    if frame.empty:
        raise ConfigError(file_for_errors, "data.path", f"{data.path} has no rows with both an image and a label")
    values = []
    for v in frame[data.image_column]:
        if isinstance(v, dict):  # Parquet's embedded image struct {bytes, path}
            values.append({"path": v.get("path"), "bytes": v.get("bytes")})
        else:  # a path, relative to the table's folder
            p = Path(str(v))
            values.append({"path": str(p if p.is_absolute() else data.path.parent / p), "bytes": None})
    return values, [str(x) for x in frame[data.label_column]]


def _decode(feature, value: dict, file_for_errors, key: str):
    from PIL import Image, UnidentifiedImageError

    where = value["path"] or "an embedded image"
    try:
        return feature.decode_example(value)
    except FileNotFoundError:
        raise ConfigError(file_for_errors, key, f"image {where} does not exist; fix the path or remove the row") from None
    except UnidentifiedImageError:
        raise ConfigError(file_for_errors, key, f"{where} is not a readable image file; replace or remove it") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # PIL: truncated, damaged
        raise ConfigError(file_for_errors, key, f"{where} is damaged or truncated ({' '.join(str(exc).split())[:120]});"
                                                " replace or remove it") from None


def read_images(data: ImageData, size_px: tuple | None, file_for_errors, resample: str = "bilinear") -> Images:
    """Every image decoded, converted to grayscale or RGB and resized to `size_px` = (height, width) when given;
    without a resize all images must share one size and channel count."""
    import datasets
    from PIL import Image

    path = data.path
    if not path.exists():
        raise ConfigError(file_for_errors, "data.path", f"{path} does not exist; give a folder with one subfolder per "
                                                        "class, or a .csv/.parquet table of image paths and labels")
    if path.is_dir():
        values, labels = _folder_entries(path, file_for_errors)
        key = "data.path"
    elif table_suffix(path) in TABLES:
        values, labels = _table_entries(data, file_for_errors)
        key = "data.image_column"
    else:
        raise ConfigError(file_for_errors, "data.path", f"{path.suffix!r} is not read; give a folder with one "
                                                        f"subfolder per class, or a {' / '.join(TABLES)} table")
    feature = datasets.Image()
    fil = getattr(Image.Resampling, resample.upper())
    pixels, first = [], None
    for value in values:
        img = _decode(feature, value, file_for_errors, key)
        mode = "L" if img.mode in GRAYSCALE else "RGB"
        if size_px is None:
            if first is None:
                first = (img.size, mode, value["path"])
            elif (img.size, mode) != first[:2]:
                (w0, h0), m0, p0 = first
                (w, h) = img.size
                raise ConfigError(file_for_errors, "preprocessing.resize",
                                  f"images differ: {p0} is {h0}x{w0} with {len(m0)} channel(s), {value['path']} is "
                                  f"{h}x{w} with {len(mode)}; name `preprocessing: {{resize: [HEIGHT, WIDTH]}}` in the "
                                  "task file (every image is then resized and converted to RGB)")
        else:
            mode = "RGB"  # a resize makes every image alike: the teacher's three channels
        img = img.convert(mode) if img.mode != mode else img  # before resizing: PIL resizes palettes by nearest
        if size_px is not None and img.size != (size_px[1], size_px[0]):
            img = img.resize((size_px[1], size_px[0]), fil)
        arr = np.asarray(img)
        pixels.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return Images(np.stack(pixels), labels, [v["path"] for v in values])


MIN_PER_CLASS = 2  # a stratified split puts at least one image of each class on each side


def splits(images: Images, preprocessing, validation_fraction: float, seed: int, input_name: str,
           file_for_errors, max_train: int | None = None) -> tuple[list, object, object]:
    """(classes, train, validation): labels sorted into class indices, a seeded stratified validation split, and at
    most `max_train` training images (a stratified draw from the rest)."""
    import torch

    from .data import ImageSplit, stratified_split

    classes = sorted(set(images.labels))
    counts = {c: images.labels.count(c) for c in classes}
    small = [c for c in classes if counts[c] < MIN_PER_CLASS]
    if len(classes) < 2 or small:
        what = f"class {small[0]!r} has {counts[small[0]]} image(s)" if small else f"only one class ({classes[0]!r})"
        raise ConfigError(file_for_errors, "data.path", f"{what}; every task needs >= 2 classes with >= "
                                                        f"{MIN_PER_CLASS} images each to split and measure")
    labels = np.array([classes.index(x) for x in images.labels])
    n_val = max(len(classes), round(validation_fraction * len(labels)))
    train_idx, val_idx = stratified_split(labels, n_val, max_train, seed)
    pixels, y = torch.from_numpy(images.pixels), torch.from_numpy(labels)
    return (classes, ImageSplit(pixels[train_idx], y[train_idx], preprocessing, input_name),
            ImageSplit(pixels[val_idx], y[val_idx], preprocessing, input_name))

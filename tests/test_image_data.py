"""Image task data (issue 31): the built-in Fashion-MNIST from Debian's idx files (a seeded, stratified validation
split from the training files; the official test split untouched), and the user's own images (a class-per-folder
directory or a CSV/Parquet table, decoded by `datasets`' Image feature) with the task's preprocessing. Bad images
are one line naming the task file, the key and the fix. Tiny generated images in tmp dirs; no network."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from search.errors import ConfigError
from search.flows.image_classification import fashion_mnist as fm
from search.flows.image_classification.data import Preprocessing, stratified_split
from search.flows.image_classification.image_files import ImageData, read_images, splits

TASK = "task.yaml"
HALF = (0.5, 0.5, 0.5)


def _png(path, size=(8, 8), mode="RGB", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(g.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def _folder(root, per_class=3, **kw):
    for c in ("cat", "dog"):
        for i in range(per_class):
            _png(root / c / f"{i}.png", seed=i + 10 * len(c), **kw)
    return root


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text and text.startswith(f"{TASK}: ")
    return text


# -- the built-in task -------------------------------------------------------------------------------------------
needs_fmnist = pytest.mark.skipif(not (fm.FOLDER / "train-images-idx3-ubyte.gz").is_file(),
                                  reason="dataset-fashion-mnist not installed (make setup)")


@needs_fmnist
def test_fashion_mnist_splits_come_from_the_training_files_only(monkeypatch):
    read = []
    original = fm.read_idx
    monkeypatch.setattr(fm, "read_idx", lambda p: read.append(p.name) or original(p))
    task = fm.FashionMnistTask(train_examples=1000, validation_examples=500)
    train, val = fm.splits(task, HALF, HALF, "pixel_values")
    assert all(name.startswith("train-") for name in read)  # the official test split is never read here
    assert (len(train), len(val)) == (1000, 500)
    assert np.bincount(train.labels.numpy()).tolist() == [100] * 10  # stratified: 10 balanced classes
    assert np.bincount(val.labels.numpy()).tolist() == [50] * 10
    features, labels = val.batch(torch.arange(8))
    x = features["pixel_values"]
    assert x.shape == (8, 3, fm.RESOLUTION_PX, fm.RESOLUTION_PX) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 2])  # grayscale replicated into the teacher's three channels
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.99  # (x / 255 - 0.5) / 0.5: black is -1
    again, _ = fm.splits(task, HALF, HALF, "pixel_values")
    assert torch.equal(again.images, train.images)  # seeded
    test = fm.official_test_split(task, HALF, HALF, "pixel_values")
    assert len(test) == 10_000 and fm.classes()[9] == "Ankle boot"


def test_the_validation_split_is_disjoint_stratified_and_seeded():
    labels = np.repeat(np.arange(4), 50)
    train, val = stratified_split(labels, 40, 100, seed=3)
    assert not set(train) & set(val) and (len(train), len(val)) == (100, 40)
    assert np.bincount(labels[val]).tolist() == [10] * 4 and np.bincount(labels[train]).tolist() == [25] * 4
    assert all(np.array_equal(a, b) for a, b in zip(stratified_split(labels, 40, 100, seed=3), (train, val)))
    assert not np.array_equal(stratified_split(labels, 40, 100, seed=4)[1], val)


# -- the user's images -------------------------------------------------------------------------------------------
def test_a_class_per_folder_directory_is_read_and_split(tmp_path):
    images = read_images(ImageData(_folder(tmp_path / "imgs", per_class=4)), None, TASK)
    assert images.pixels.shape == (8, 3, 8, 8) and images.pixels.dtype == np.uint8
    assert images.labels == ["cat"] * 4 + ["dog"] * 4
    expected = np.asarray(Image.open(tmp_path / "imgs" / "cat" / "0.png")).transpose(2, 0, 1)
    assert np.array_equal(images.pixels[0], expected)  # decoded exactly
    pre = Preprocessing(None, HALF, HALF)
    classes, train, val = splits(images, pre, 0.25, 0, "pixel_values", TASK)
    assert classes == ["cat", "dog"] and (len(train), len(val)) == (6, 2)
    assert sorted(val.labels.tolist()) == [0, 1]
    _, capped, _ = splits(images, pre, 0.25, 0, "pixel_values", TASK, max_train=2)
    assert sorted(capped.labels.tolist()) == [0, 1]  # a cap draws from every class, not the first folder's images


def test_a_resize_in_the_task_makes_mixed_images_alike(tmp_path):
    root = _folder(tmp_path / "imgs")
    _png(root / "cat" / "big_gray.png", size=(20, 12), mode="L")
    with pytest.raises(ConfigError, match=r"preprocessing.resize: images differ: .* is 8x8 with 3 channel\(s\), "
                                          r".*big_gray.png is 12x20 with 1; name `preprocessing") as err:
        read_images(ImageData(root), None, TASK)
    _one_line(err)
    images = read_images(ImageData(root), (16, 16), TASK)
    assert images.pixels.shape == (7, 3, 16, 16)


def test_grayscale_images_alone_stay_one_channel(tmp_path):
    images = read_images(ImageData(_folder(tmp_path / "imgs", mode="L")), None, TASK)
    assert images.pixels.shape == (6, 1, 8, 8)


def test_an_empty_class_folder_is_refused(tmp_path):
    root = _folder(tmp_path / "imgs")
    (root / "bird").mkdir()
    with pytest.raises(ConfigError, match=r"data.path: class folder .*bird is empty; put that class's images") as err:
        read_images(ImageData(root), None, TASK)
    _one_line(err)


@pytest.mark.parametrize("damage, said", [("truncate", "damaged or truncated"), ("garbage", "not a readable image"),
                                          ("empty", "not a readable image")])
def test_an_unreadable_or_truncated_image_is_named(tmp_path, damage, said):
    root = _folder(tmp_path / "imgs")
    bad = _png(root / "dog" / "bad.png", size=(64, 64))
    data = bad.read_bytes()
    bad.write_bytes({"truncate": data[: len(data) * 3 // 5], "garbage": b"not an image at all" * 10,
                     "empty": b""}[damage])
    with pytest.raises(ConfigError, match=rf"data.path: .*bad.png is {said}.*; replace or remove it") as err:
        read_images(ImageData(root), None, TASK)
    _one_line(err)


def test_a_csv_of_relative_paths_and_a_parquet_of_embedded_images(tmp_path):
    root = _folder(tmp_path / "imgs")
    rows = [(f"imgs/{c}/{i}.png", c) for c in ("cat", "dog") for i in range(3)]
    pd.DataFrame(rows, columns=["file", "kind"]).to_csv(tmp_path / "list.csv", index=False)
    from_csv = read_images(ImageData(tmp_path / "list.csv", "file", "kind"), None, TASK)
    assert from_csv.pixels.shape == (6, 3, 8, 8) and from_csv.labels == ["cat"] * 3 + ["dog"] * 3
    embedded = [{"image": {"bytes": (root / c / f"{i}.png").read_bytes(), "path": None}, "label": c}
                for c in ("cat", "dog") for i in range(3)]
    pd.DataFrame(embedded).to_parquet(tmp_path / "imgs.parquet")
    from_parquet = read_images(ImageData(tmp_path / "imgs.parquet"), None, TASK)
    assert np.array_equal(from_parquet.pixels, from_csv.pixels)


def test_a_table_with_a_wrong_column_or_a_missing_file_is_one_line(tmp_path):
    _folder(tmp_path / "imgs")
    pd.DataFrame([("imgs/cat/0.png", "cat"), ("imgs/cat/nope.png", "cat")], columns=["file", "label"]).to_csv(
        tmp_path / "list.csv", index=False)
    with pytest.raises(ConfigError, match=r"data.image_column: column 'image' not in list.csv; columns are file"):
        read_images(ImageData(tmp_path / "list.csv"), None, TASK)
    with pytest.raises(ConfigError, match=r"data.image_column: image .*nope.png does not exist") as err:
        read_images(ImageData(tmp_path / "list.csv", "file"), None, TASK)
    _one_line(err)
    with pytest.raises(ConfigError, match=r"data.path: .*missing does not exist; give a folder"):
        read_images(ImageData(tmp_path / "missing"), None, TASK)


def test_a_class_too_small_to_split_is_refused(tmp_path):
    root = _folder(tmp_path / "imgs")
    _png(root / "bird" / "0.png")
    images = read_images(ImageData(root), None, TASK)
    with pytest.raises(ConfigError, match=r"data.path: class 'bird' has 1 image\(s\)"):
        splits(images, Preprocessing(None, HALF, HALF), 0.3, 0, "pixel_values", TASK)


def test_an_image_task_file_is_read_strictly(tmp_path):
    from search.flows.image_classification.inputs import load_task

    _folder(tmp_path / "imgs")
    path = tmp_path / "task.yaml"
    path.write_text("task_type: image_classification\ndata: {path: imgs}\n"
                    "preprocessing: {resize: [48, 48], mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}\n"
                    "max_train_examples: 100\n")
    task = load_task(str(path))
    assert task.data.path == (tmp_path / "imgs").resolve() and (task.resolution_px, task.resize) == (48, True)
    assert task.mean == (0.485, 0.456, 0.406) and task.train_examples == 100 and task.teacher_weights is None
    for body, said in [("preprocessing: {resize: [48, 32]}", r"preprocessing.resize: got \[48, 32\]; .* square"),
                       ("preprocessing: {std: [0.5, 0, 0.5]}", r"preprocessing.std: .* must be > 0"),
                       ("preprocessing: {mean: [0.5]}", r"preprocessing.mean: got \[0.5\]; give three numbers"),
                       ("preprocessing: {crop: 3}", r"preprocessing.crop: unknown key")]:
        path.write_text(f"task_type: image_classification\ndata: {{path: imgs}}\n{body}\n")
        with pytest.raises(ConfigError, match=said):
            load_task(str(path))

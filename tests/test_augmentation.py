"""Augmentation: the user's unlabelled task text, labelled by the teacher, joins distillation only."""
from __future__ import annotations

import pytest
import torch

from conftest import write_tiny_task
from search.errors import ConfigError
from search.tasks import load_task
from search.tasks.teacher import prepare, teacher_folder
from search.train import outputs_of


def _with_unlabelled(task_yaml, name):
    text = task_yaml.read_text().replace("  label_column: y\n", f"  label_column: y\n  unlabelled: {name}\n")
    out = task_yaml.with_name("task_aug.yaml")
    out.write_text(text)
    return out


def test_teacher_labels_unlabelled_text_and_validation_text_is_never_added(tmp_path):
    task_yaml = write_tiny_task(tmp_path / "task")
    plain = prepare(load_task(str(task_yaml)), tmp_path / "cache", log=lambda s: None)
    leaked = plain.val.texts[:3] + plain.train.texts[:2]  # must be dropped: already in a split
    new = ["good great movie 9001", "awful worst movie 9002", "the movie was fine 9003", "good great movie 9001"]
    (tmp_path / "task" / "more.txt").write_text("\n".join(leaked + new) + "\n")
    aug = prepare(load_task(str(_with_unlabelled(task_yaml, "more.txt"))), tmp_path / "cache", log=lambda s: None)

    assert len(aug.train) == len(plain.train) and len(aug.val) == len(plain.val)  # the labelled splits unchanged
    assert len(aug.kd_train) == len(plain.train) + 3  # 3 new unique texts
    assert aug.kd_train.texts[-3:] == new[:3] and not set(aug.kd_train.texts[-3:]) & set(aug.val.texts)
    extra = aug.kd_train.subset(len(aug.kd_train))
    teacher_outputs = outputs_of(aug.teacher, extra)
    torch.testing.assert_close(aug.kd_outputs, teacher_outputs, rtol=1e-4, atol=1e-4)
    assert torch.equal(aug.kd_train.labels[-3:], teacher_outputs[-3:].argmax(-1))  # pseudo-labels
    assert aug.key != plain.key  # students distilled on other data are cached apart
    # the teacher is the same, cached once under the task's key, not the students' (bench search links it)
    assert teacher_folder(aug.task, tmp_path / "cache") == teacher_folder(plain.task, tmp_path / "cache")
    assert (teacher_folder(aug.task, tmp_path / "cache") / "config.json").is_file()
    assert plain.kd_train is plain.train  # no augmentation: nothing changes


def test_unlabelled_errors_name_the_key(tmp_path):
    task_yaml = write_tiny_task(tmp_path / "task")
    with pytest.raises(ConfigError, match="data.unlabelled: .*does not exist"):
        load_task(str(_with_unlabelled(task_yaml, "nope.txt")))
    plain = prepare(load_task(str(task_yaml)), tmp_path / "cache", log=lambda s: None)
    (tmp_path / "task" / "dup.txt").write_text("\n".join(plain.val.texts[:5]) + "\n")
    with pytest.raises(ConfigError, match="data.unlabelled: .*no text outside"):
        prepare(load_task(str(_with_unlabelled(task_yaml, "dup.txt"))), tmp_path / "cache", log=lambda s: None)


def test_augmented_texts_are_seeded_variants_never_validation_text():
    from search.tasks.teacher import augmented_texts

    train = ["a good film indeed", "a bad film sadly", "fine"]
    texts, made_from = augmented_texts(train, copies=3, replace_share=0.5, seed=0, exclude={"a bad film indeed"})
    assert (texts, made_from) == augmented_texts(train, 3, 0.5, 0, {"a bad film indeed"})  # seeded
    assert len(texts) == len(made_from) and set(made_from) <= {0, 1, 2}
    assert not set(texts) & (set(train) | {"a bad film indeed"}) and len(set(texts)) == len(texts)
    vocab = {w for t in train for w in t.split()}
    for text, src in zip(texts, made_from):  # same length as its source, words from the training text only
        assert len(text.split()) == len(train[src].split()) and set(text.split()) <= vocab


def test_augmentation_joins_distillation_and_copies_of_held_out_rows_stay_out(tmp_path):
    task_yaml = write_tiny_task(tmp_path / "task")
    text = task_yaml.read_text().replace("  label_column: y\n", "  label_column: y\n  augment: {copies: 2}\n")
    aug_yaml = task_yaml.with_name("task_aug.yaml")
    aug_yaml.write_text(text)
    plain = prepare(load_task(str(task_yaml)), tmp_path / "cache", log=lambda s: None)
    aug = prepare(load_task(str(aug_yaml)), tmp_path / "cache", log=lambda s: None)
    assert aug.teacher_train_outputs.shape == plain.teacher_train_outputs.shape  # the same teacher (its key)
    n = len(aug.train)
    made = len(aug.kd_train) - n
    assert made > n  # ~2 variants per training text
    assert not set(aug.kd_train.texts[n:]) & set(aug.val.texts)
    torch.testing.assert_close(aug.kd_outputs[n:], outputs_of(aug.teacher, aug.kd_train.take(slice(n, None))),
                               rtol=1e-4, atol=1e-4)
    held = aug.with_holdout()
    h = len(held.holdout)
    sources = aug.kd_source
    kept = int((sources < n - h).sum())
    assert len(held.kd_train) == n - h + kept < len(aug.kd_train)  # variants of held-out rows dropped too
    assert len(held.kd_source) == kept and bool((held.kd_source < n - h).all())
    assert aug.key != plain.key and held.key != aug.key


def test_augment_errors_name_the_key(tmp_path):
    task_yaml = write_tiny_task(tmp_path / "task")
    bad = task_yaml.with_name("bad.yaml")
    bad.write_text(task_yaml.read_text().replace("  label_column: y\n", "  label_column: y\n  augment: {copies: 0}\n"))
    with pytest.raises(ConfigError, match="data.augment.copies: got 0; must be >= 1"):
        load_task(str(bad))
    bad.write_text(task_yaml.read_text().replace("  label_column: y\n",
                                                 "  label_column: y\n  augment: {copies: 1, mask: 0.1}\n"))
    with pytest.raises(ConfigError, match="data.augment.mask: unknown key"):
        load_task(str(bad))

"""Augmentation: the user's unlabelled task text, labelled by the teacher, joins distillation only."""
from __future__ import annotations

import pytest
import torch

from conftest import write_tiny_task
from search.errors import ConfigError
from search.tasks import load_task
from search.tasks.teacher import prepare
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
    assert plain.kd_train is plain.train  # no augmentation: nothing changes


def test_unlabelled_errors_name_the_key(tmp_path):
    task_yaml = write_tiny_task(tmp_path / "task")
    with pytest.raises(ConfigError, match="data.unlabelled: .*does not exist"):
        load_task(str(_with_unlabelled(task_yaml, "nope.txt")))
    plain = prepare(load_task(str(task_yaml)), tmp_path / "cache", log=lambda s: None)
    (tmp_path / "task" / "dup.txt").write_text("\n".join(plain.val.texts[:5]) + "\n")
    with pytest.raises(ConfigError, match="data.unlabelled: .*no text outside"):
        prepare(load_task(str(_with_unlabelled(task_yaml, "dup.txt"))), tmp_path / "cache", log=lambda s: None)

"""Atomic writes: a crash while writing leaves the old complete file (or folder) or the new one, never half."""
from __future__ import annotations

import json
import os

import pytest

from search import run_dir
from search.run_dir import RunDir, atomic_replace_dir, atomic_write_json, atomic_write_text


def test_a_crash_before_the_rename_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "selected.json"
    atomic_write_json(path, {"trial": 1})

    def crash(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        atomic_write_json(path, {"trial": 2})
    assert json.loads(path.read_text()) == {"trial": 1} and os.listdir(tmp_path) == ["selected.json"]
    monkeypatch.undo()
    atomic_write_text(path, '{"trial": 3}')
    assert json.loads(path.read_text()) == {"trial": 3}


def test_a_crash_while_filling_a_folder_leaves_the_old_folder(tmp_path):
    dst = tmp_path / "model"
    atomic_replace_dir(lambda d: (d.mkdir(), (d / "model.onnx").write_text("old")), dst)

    def half(d):
        d.mkdir()
        (d / "model.onnx").write_text("new, half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_replace_dir(half, dst)
    assert (dst / "model.onnx").read_text() == "old"
    atomic_replace_dir(lambda d: (d.mkdir(), (d / "model.onnx").write_text("new")), dst)
    assert (dst / "model.onnx").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_the_layout_is_in_one_place(tmp_path):
    rd = RunDir(tmp_path / "r")
    assert rd.study_url == f"sqlite:///{tmp_path / 'r' / 'study.db'}" and run_dir.STUDY_NAME == "search"
    assert rd.trial_dir(7) == tmp_path / "r" / "trials" / "0007"
    rd.root.mkdir()
    atomic_write_json(rd.budget_json, {"artifact_name": "model.onnx"})
    assert rd.artifact(7) == tmp_path / "r" / "trials" / "0007" / "model.onnx"

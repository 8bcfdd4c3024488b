"""The registry's torchvision 0.28.0 is a CUDA build; on the pinned CPU torch its import fails ("operator
torchvision::nms does not exist") and takes every transformers model class down with it. Importing `search` first
makes both importable (search/torchvision_cpu.py), in a fresh interpreter as the CLI and the workers start."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision not installed")


def _fresh(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_timm_and_transformers_import_after_the_package_whichever_comes_first():
    proc = _fresh("import search\n"
                  "from transformers import BertForSequenceClassification\n"  # transformers probes torchvision first
                  "import timm, torch_pruning, torchvision, torch\n"
                  "print(torch.__version__, torchvision.__version__, timm.__version__)")
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert proc.stdout.split()[0] == "2.13.0+cpu"  # the set-up did not swap in another torch
    proc = _fresh("from search.torchvision_cpu import import_timm\nimport_timm()\n"
                  "from transformers import BertForSequenceClassification")
    assert proc.returncode == 0, proc.stderr[-1500:]


def test_any_process_of_the_venv_imports_transformers_models(tmp_path):
    """Not only ours: a user loading an exported hf/ folder with transformers, from anywhere (make setup puts a .pth
    in the venv that installs the finder at start-up)."""
    proc = subprocess.run([sys.executable, "-c", "from transformers import BertForSequenceClassification\n"
                                                 "import timm"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-1500:]

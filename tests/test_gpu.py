"""The CUDA path (marked `gpu`): training runs on the GPU when one is asked for. CI has no GPU, so these
skip there with the reason; run them on a GPU machine with `pytest -m gpu tests/test_gpu.py`."""
from __future__ import annotations


import pandas as pd
import pytest
import torch

from conftest import random_split, run_search, tiny_model, tiny_run_inputs

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch here")]


def test_train_runs_on_the_gpu_and_hands_back_a_cpu_model():
    from search import accel
    from search.train import train

    accel.configure("cuda")
    try:
        model, seen = tiny_model(), []
        model.classifier.register_forward_hook(lambda m, i, o: seen.append((o.device.type, o.dtype)))
        train(model, random_split(), steps=3, lr=1e-3)
        assert seen and all(d == "cuda" for d, _ in seen)
        assert all(t == torch.bfloat16 for _, t in seen)  # bf16 autocast on CUDA
        assert all(p.device.type == "cpu" for p in model.parameters())  # export and caches see a CPU model
    finally:
        accel.configure("cpu")


def test_tiny_run_with_device_cuda_trains_on_the_gpu(tmp_path):
    target = ("name: tiny\ndevice: {latency: estimated, memory_mb: 1000, memory_bandwidth_gbps: 50, "
              "peak_tops: {fp32: 1}}\nworkload: {batch_size: 1, sequence_length: 16}\n"
              "budget: {memory_mb: 50, p99_latency_ms: 100, accuracy_floor: {max_drop: 0.5}}\n")
    proc = run_search(tmp_path / "results", "run", *tiny_run_inputs(tmp_path, target), "--trials", "2",
                      "--device", "cuda", "--run-id", "gpu")
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    assert "training on cuda" in proc.stdout
    trials = pd.read_csv(tmp_path / "results" / "gpu" / "trials.csv")
    done = trials[trials["state"] == "COMPLETE"]
    assert len(done) == 2 and done["train_device"].str.startswith("cuda").all()

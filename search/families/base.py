"""The model-family seam: everything that depends on a model's architecture, behind one interface.

The pipeline, the study, the cost model and the compressors call a `Family` and never look past it:
they do not know module paths, config fields, input names or the output attribute of a forward call.
A new family (a decoder LM, an image classifier) is one new module implementing this class and one
line in `families/__init__.py`.

Contract (as Optuna's storages document theirs):
- Methods are pure with respect to the family object: a Family holds no per-model state, so one
  instance serves every model of its kind, in any thread.
- Methods that cut (`select_layers`, `slice_*`, `trim_vocab`) change the model in place and leave
  it runnable: `forward` works after every single cut, and `sync_config` makes the HF config tell
  the truth again (called once after a series of cuts).
- A model batch is a dict of named tensors (`features`), exactly what the tokenizer produced and
  what the exported artifact takes as inputs; only the family knows the names. `token_mask` says
  which positions are real tokens (statistics are taken over those only).
- `forward` returns `Forward`: `outputs` is the task-level tensor ([batch, classes] for a classifier,
  [batch, seq, vocab] for an LM), plus hidden states / attentions when asked for.
- Shapes and operator lists are functions of `ModelShape` alone (no weights): the screen prices a
  recipe before any training from them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class ModelShape:
    """What memory and latency depend on; known before training from the recipe alone."""

    family: str  # the Family's name: `families.get(shape.family)` prices it
    layers: int
    hidden: int
    heads: tuple  # query heads per layer
    ffn: tuple  # FFN channels per layer
    vocab: int  # embedding rows (after trimming, when trimmed)
    head_dim: int
    kv_heads: tuple | None = None  # per layer, for grouped-query attention; None: one KV head per query head
    positions: int = 0  # learned position-embedding rows (0: rotary or none)
    segments: int = 0  # token-type (segment) embedding rows (0: none)
    outputs: int = 0  # width of the task head (classes)
    tied_embeddings: bool = False
    id_map_size: int = 0  # > 0 when the vocabulary is trimmed: the id lookup table's length

    @property
    def input_vocab(self) -> int:
        """Token ids the model accepts (the tokenizer's vocabulary, trimmed or not)."""
        return self.id_map_size or self.vocab

    @classmethod
    def from_json(cls, d: dict) -> "ModelShape":
        """A shape as stored in a run folder (`asdict`, through JSON: tuples come back as lists)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class Tensor:
    """One weight tensor of a shape, for byte pricing by a backend.

    role: "block_linear" (a compressible Linear inside layer `layer`), "head_linear" (task head Linears,
    kept out of weight-only quantization), "embedding" (a lookup table, rows x cols), "vector" (biases,
    norms: `rows` elements), "index_table" (an int64 id map of `rows` entries)."""

    name: str
    role: str
    rows: int  # out_features for a Linear
    cols: int = 1  # in_features for a Linear
    layer: int = -1

    @property
    def elements(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class Operator:
    """One kernel of a forward pass, for the roofline: `weight_elements` are read at the precision the
    recipe gives layer `layer` (0 for weight-free ops), `activation_bytes` at fp32."""

    name: str
    flops: float
    activation_bytes: float
    weight_elements: int = 0
    layer: int = -1
    linear: bool = False  # a matmul against weights: takes the quantized kernel's precision
    in_features: int = 0  # a linear's K: block-quantized weights have ceil(K / block) blocks per output row


@dataclass(frozen=True)
class Limits:
    """What the knobs may ask of a student cut from this teacher."""

    layers: int
    hidden: int
    ffn: int
    head_dim: int  # hidden sizes are multiples of it; a student keeps whole teacher heads
    head_group: int = 1  # query heads per KV head (grouped-query attention): heads are kept in whole groups
    heads: int | None = None  # the teacher's query heads per layer, when known
    positions: int | None = None  # the most tokens the teacher's position embeddings take, when known

    def max_heads(self, hidden: int) -> int:
        return hidden // self.head_dim

    def heads_for(self, asked: int, hidden: int) -> int:
        """The head count a student can have: at most what its width holds (and the teacher has), a whole
        number of KV groups, at least one group."""
        top = min(asked, self.max_heads(hidden), self.heads or asked)
        return max(self.head_group, top - top % self.head_group)


@dataclass
class Importance:
    """Calibration statistics that rank what to keep when cutting (higher = more important)."""

    hidden: torch.Tensor  # [hidden]: mean |activation| over the residual stream
    heads: list  # per layer [heads]: mean norm of each head's contribution to the layer output
    ffn: list  # per layer [ffn]: mean |activation| x norm of its output weights


@dataclass
class Forward:
    outputs: torch.Tensor
    hidden_states: tuple | None = None  # [0] is the embeddings' output, [i + 1] layer i's
    attentions: tuple | None = None  # per layer [batch, heads, query, key]


BATCH, SEQUENCE = "batch", "sequence"  # symbolic input dims: the workload's batch size and sequence length
FILLS = ("ids", "ones", "normal")  # how a latency probe fills an input: token ids in [1, high), ones, N(0, 1)


@dataclass(frozen=True)
class InputSpec:
    """One input of the exported artifact, for a latency probe that builds a random batch without the model: its
    name, dims (ints, or BATCH / SEQUENCE for the workload's), numpy dtype name, and fill (FILLS; `high` bounds ids).
    Token models take [BATCH, SEQUENCE] int64 ids and masks; an image model [BATCH, 3, H, W] float32 pixels."""

    name: str
    dims: tuple
    dtype: str
    fill: str
    high: int = 0

    def __post_init__(self):
        if self.fill not in FILLS:
            raise ValueError(f"InputSpec {self.name}: fill {self.fill!r}; one of {', '.join(FILLS)}")

    def dims_for(self, batch: int, seq: int) -> list[int]:
        return [batch if d == BATCH else seq if d == SEQUENCE else int(d) for d in self.dims]

    def as_json(self, batch: int, seq: int) -> list:
        """What the standalone probe reads (backends' probe.py): [name, fill, high, dims, dtype]."""
        return [self.name, self.fill, self.high, self.dims_for(batch, seq), self.dtype]


@dataclass(frozen=True)
class ExportSpec:
    """How a runtime backend exports the model: input and output names (the tokenizer's feature names),
    an example batch, and hints for the runtime's graph optimiser."""

    inputs: tuple
    outputs: tuple
    example: dict  # name -> example tensor
    dynamic_axes: dict
    optimizer_hints: dict = field(default_factory=dict)  # e.g. onnxruntime's transformer-fusion model type
    probe_inputs: tuple = ()  # an InputSpec per input: how a latency probe builds a random batch
    # what a static int8 build quantizes (onnxruntime op types): a transformer's MatMuls, a CNN's convolutions too
    quantize_ops: tuple = ("MatMul",)


class Family(ABC):
    """What every model family knows, whatever its architecture: identity and loading, a forward pass, its shape
    and what a shape costs (tensors for bytes, operators for the roofline, activation memory), the export spec, the
    way back to a stock model. The cuts a family allows are a capability on top (TransformerCuts below; channel cuts
    for convolutional families to come), so a family without heads or a vocabulary does not pretend to have them."""

    name: str = ""
    #: the stock Hugging Face class a student converts back to (`to_standard`), for the deploy card
    hf_auto_class: str = ""
    #: the task types (tasks/) this family's models serve
    task_types: tuple = ("classification",)

    # -- identity and loading ---------------------------------------------------------------------------
    @abstractmethod
    def matches(self, model: nn.Module) -> bool:
        """True for a model of this family (used by `families.of`)."""

    @abstractmethod
    def load(self, model_dir: Path, num_outputs: int, file_for_errors: str, safetensors_only: bool = True) -> nn.Module:
        """The teacher from a local directory, ready for this family's cuts and export. Weights load only
        from safetensors unless the task file explicitly allows pickled checkpoints."""

    @abstractmethod
    def forward(self, model: nn.Module, features: dict, hidden_states: bool = False,
                attentions: bool = False) -> Forward: ...

    # -- shape --------------------------------------------------------------------------------------------
    @abstractmethod
    def shape_of(self, model: nn.Module) -> ModelShape: ...

    def shape_from_json(self, d: dict):
        """A shape of this family as a run folder stores it (`asdict`, through JSON)."""
        return ModelShape.from_json(d)

    def limits_from_config(self, model_dir: Path) -> Limits | None:
        """The knob limits read from a teacher directory's config alone (no weights), so a space can be
        checked against the teacher before any heavy work; None when the family cannot tell."""
        return None

    @abstractmethod
    def tensors(self, shape: ModelShape) -> list[Tensor]:
        """Every weight tensor a model of this shape stores."""

    @abstractmethod
    def operators(self, shape: ModelShape, batch: int, seq: int) -> list[Operator]:
        """Every kernel of one forward pass."""

    @abstractmethod
    def activation_bytes(self, shape: ModelShape, batch: int, seq: int) -> int:
        """Estimated peak activation bytes of one forward pass (fp32)."""

    @abstractmethod
    def random_model(self, shape: ModelShape, seed: int) -> nn.Module:
        """A model of this shape with random weights (latency benchmarks: speed does not depend on values)."""

    # -- leaving the search -------------------------------------------------------------------------------
    @abstractmethod
    def export_spec(self, shape: ModelShape) -> ExportSpec: ...

    def probe_shape(self, teacher_shape, student_shape):
        """The shape whose inputs re-measure a student's artifact (JSON mappings; `student_shape` may be None): the
        teacher's by default, since a text student takes the teacher's tokens; a family whose students take inputs
        of their own (an image student at its own resolution) returns the student's."""
        return teacher_shape

    @abstractmethod
    def to_standard(self, model: nn.Module) -> nn.Module:
        """An equivalent model with a stock config, loadable by plain `from_pretrained`."""


class TransformerCuts(Family):
    """A transformer family's inputs and cuts: tokens in (a vocabulary to trim), repeated blocks of heads and FFN
    channels over a residual width (layers kept, heads/KV groups, FFN channels and hidden dimensions sliced by
    importance), as the classifier pipeline and compress/ apply them."""

    @abstractmethod
    def tokenize(self, tokenizer, texts: list[str], max_length: int) -> dict:
        """Padded features [N, max_length] keyed as the model and its exported artifact take them."""

    @abstractmethod
    def token_mask(self, features: dict) -> torch.Tensor:
        """[batch, seq] bool: the real tokens of a batch."""

    @abstractmethod
    def token_ids(self, features: dict) -> torch.Tensor:
        """[batch, seq] the vocabulary ids of a batch (what vocabulary trimming keeps rows for)."""

    def limits(self, teacher: ModelShape) -> Limits:
        return Limits(layers=teacher.layers, hidden=teacher.hidden, ffn=min(teacher.ffn), head_dim=teacher.head_dim)

    # -- what compression acts on ------------------------------------------------------------------------
    @abstractmethod
    def blocks(self, model: nn.Module) -> nn.ModuleList:
        """The repeated layers, in order."""

    @abstractmethod
    def block_linears(self, block: nn.Module) -> list[nn.Linear]:
        """The Linears of one block that pruning and quantization act on."""

    def linears(self, model: nn.Module) -> list[nn.Linear]:
        return [lin for block in self.blocks(model) for lin in self.block_linears(block)]

    @abstractmethod
    def embeddings(self, model: nn.Module) -> list[nn.Embedding]:
        """The lookup tables (a trimmed vocabulary's table inside its id-remapping wrapper)."""

    @abstractmethod
    def word_embedding(self, model: nn.Module) -> nn.Module: ...

    @abstractmethod
    def set_word_embedding(self, model: nn.Module, module: nn.Module) -> None: ...

    # -- cuts -------------------------------------------------------------------------------------------
    def top_heads(self, block: nn.Module, scores: torch.Tensor, k: int) -> torch.Tensor:
        """The k most important heads (sorted indices); a family with grouped heads keeps whole groups."""
        return torch.topk(scores, k).indices.sort().values

    @abstractmethod
    def select_layers(self, model: nn.Module, keep: list[int]) -> None: ...

    @abstractmethod
    def slice_heads(self, block: nn.Module, keep_heads: list[int]) -> None: ...

    @abstractmethod
    def slice_ffn(self, block: nn.Module, keep: torch.Tensor) -> None: ...

    @abstractmethod
    def slice_hidden(self, model: nn.Module, keep: torch.Tensor) -> None: ...

    @abstractmethod
    def sync_config(self, model: nn.Module) -> None: ...

    @abstractmethod
    def reinitialise(self, model: nn.Module, generator: torch.Generator) -> None:
        """Fresh weights at the same (cut) shape: the random-init baseline."""

    # -- importance -------------------------------------------------------------------------------------
    def importance_points(self, model: nn.Module) -> tuple[list, list, list]:
        """Where norm-based importance reads: the modules whose outputs are the residual stream (in forward
        order); per block, the attention output projection (its input holds each head's context) with the
        head width; per block, the FFN down projection (its input holds each channel's activation)."""
        raise NotImplementedError(f"{self.name}: no importance points; override measure_importance")

    @torch.no_grad()
    def measure_importance(self, model: nn.Module, features: dict) -> Importance:
        """Norm-based scores over real tokens: hidden dims by mean |residual|, heads by the norm of their
        contribution to the attention output, FFN channels by mean |activation| x the norm of their output
        weights (BACKENDS.md: mean attention probability is identical for every head, so it ranks nothing)."""
        model.eval()
        mask = self.token_mask(features)
        residual, attn_out, ffn_down = self.importance_points(model)
        stats = {"hidden": [], "heads": {}, "ffn": {}}

        def residual_hook(_m, _inp, out):
            out = out[0] if isinstance(out, tuple) else out
            stats["hidden"].append(out[mask].abs().mean(0))

        def head_hook(i, proj, d):
            def hook(_m, inp):
                ctx = inp[0][mask]  # [tokens, heads * d]
                heads = ctx.shape[-1] // d
                w = proj.weight.view(proj.out_features, heads, d)  # [D, H, d]
                stats["heads"][i] = torch.einsum("thd,ehd->the", ctx.view(-1, heads, d), w).norm(dim=-1).mean(0)
            return hook

        def ffn_hook(i, down):
            def hook(_m, inp):
                stats["ffn"][i] = inp[0][mask].abs().mean(0) * down.weight.norm(dim=0)
            return hook

        hooks = [m.register_forward_hook(residual_hook) for m in residual]
        hooks += [proj.register_forward_pre_hook(head_hook(i, proj, d)) for i, (proj, d) in enumerate(attn_out)]
        hooks += [down.register_forward_pre_hook(ffn_hook(i, down)) for i, down in enumerate(ffn_down)]
        try:
            self.forward(model, features)
        finally:
            for h in hooks:
                h.remove()
        n = len(attn_out)
        return Importance(hidden=torch.stack(stats["hidden"]).mean(0), heads=[stats["heads"][i] for i in range(n)],
                          ffn=[stats["ffn"][i] for i in range(n)])

    @abstractmethod
    def gradient_importance(self, model: nn.Module, features: dict, labels: torch.Tensor, loss) -> Importance:
        """First-order Taylor importance of heads and FFN channels under `loss(outputs, labels)`."""


class ChannelCuts(Family):
    """A convolutional family's cut: output channels removed by an importance score, with every dimension coupled to
    them (residual adds, depthwise groups, the next layer's inputs, squeeze-excite if present) found by torch-pruning's
    dependency graph traced on an example input, not by per-model tables. The classifier's outputs (the classes) are
    never cut."""

    @abstractmethod
    def classifier(self, model: nn.Module) -> nn.Module:
        """The task head: its output width is the task's, not a knob."""

    def cut_channels(self, model: nn.Module, channel_keep_ratio: float, round_to: int = 8) -> nn.Module:
        """Keep about `channel_keep_ratio` of each prunable group's channels (rounded to multiples of `round_to`, what
        vector units like), the ones with the largest L2 norm over the group's weights (Li et al. 2017); in place."""
        import torch_pruning as tp

        if not 0 < channel_keep_ratio <= 1:
            raise ValueError(f"channel_keep_ratio {channel_keep_ratio}: keep a share in (0, 1]")
        if channel_keep_ratio == 1:
            return model
        spec = self.export_spec(self.shape_of(model))
        example = tuple(spec.example[name] for name in spec.inputs)
        was_training = model.training
        pruner = tp.pruner.BasePruner(model.eval(), example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=1 - channel_keep_ratio, ignored_layers=[self.classifier(model)],
                                      round_to=round_to)
        pruner.step()
        return model.train(was_training)

"""All BERT-specific glue in one place: read a model's shape, cut layers, heads, FFN neurons, width.

Slices use transformers' prune_linear_layer; the patched attention fields (num_attention_heads,
all_head_size) are the ones BertSelfAttention.forward reads, so a cut model runs and exports as is.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

from .candidate import HEAD_DIM


@dataclass(frozen=True)
class ModelShape:
    """What memory and latency depend on; known before training from the recipe alone."""

    layers: int
    hidden: int
    heads: tuple  # per layer
    ffn: tuple  # per layer
    vocab: int
    max_positions: int
    type_vocab: int
    num_labels: int
    head_dim: int = HEAD_DIM
    id_map_size: int = 0  # > 0 when the vocabulary is trimmed: the int64 id lookup table's length

    @property
    def input_vocab(self) -> int:
        """Token ids the model accepts (the tokenizer's vocabulary, trimmed or not)."""
        return self.id_map_size or self.vocab

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in_features, out_features) of every encoder/pooler/classifier Linear."""
        out = []
        for heads, ffn in zip(self.heads, self.ffn):
            a = heads * self.head_dim
            out += [(self.hidden, a)] * 3 + [(a, self.hidden), (self.hidden, ffn), (ffn, self.hidden)]
        return out + [(self.hidden, self.hidden), (self.hidden, self.num_labels)]


def layers_of(model) -> nn.ModuleList:
    return model.bert.encoder.layer


def shape_of(model) -> ModelShape:
    emb = model.bert.embeddings
    layers = layers_of(model)
    return ModelShape(
        layers=len(layers), hidden=emb.word_embeddings.embedding_dim,
        heads=tuple(layer.attention.self.num_attention_heads for layer in layers),
        ffn=tuple(layer.intermediate.dense.out_features for layer in layers),
        vocab=emb.word_embeddings.num_embeddings, max_positions=emb.position_embeddings.num_embeddings,
        type_vocab=emb.token_type_embeddings.num_embeddings, num_labels=model.classifier.out_features,
        id_map_size=len(emb.word_embeddings.id_map) if hasattr(emb.word_embeddings, "id_map") else 0)


def encoder_linears(model) -> list[nn.Linear]:
    """The Linears that compression acts on: attention and FFN of every layer."""
    out = []
    for layer in layers_of(model):
        att = layer.attention
        out += [att.self.query, att.self.key, att.self.value, att.output.dense, layer.intermediate.dense,
                layer.output.dense]
    return out


def select_layers(model, keep: list[int]) -> None:
    layers = layers_of(model)
    model.bert.encoder.layer = nn.ModuleList([layers[i] for i in keep])
    for new_idx, layer in enumerate(model.bert.encoder.layer):
        layer.attention.self.layer_idx = new_idx
    model.config.num_hidden_layers = len(keep)


def slice_heads(layer, keep_heads: list[int]) -> None:
    att = layer.attention.self
    d = att.attention_head_size
    index = torch.cat([torch.arange(h * d, (h + 1) * d) for h in sorted(keep_heads)])
    att.query, att.key, att.value = (prune_linear_layer(m, index, dim=0) for m in (att.query, att.key, att.value))
    layer.attention.output.dense = prune_linear_layer(layer.attention.output.dense, index, dim=1)
    att.num_attention_heads = len(keep_heads)
    att.all_head_size = len(keep_heads) * d


def slice_ffn(layer, keep: torch.Tensor) -> None:
    keep = keep.sort().values
    layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, keep, dim=0)
    layer.output.dense = prune_linear_layer(layer.output.dense, keep, dim=1)


def _slice_layernorm(ln: nn.LayerNorm, keep: torch.Tensor) -> nn.LayerNorm:
    new = nn.LayerNorm(len(keep), eps=ln.eps)
    new.weight.data, new.bias.data = ln.weight.data[keep].clone(), ln.bias.data[keep].clone()
    return new


def _slice_embedding(emb: nn.Embedding, keep: torch.Tensor) -> nn.Embedding:
    new = nn.Embedding(emb.num_embeddings, len(keep), padding_idx=emb.padding_idx)
    new.weight.data = emb.weight.data[:, keep].clone()
    return new


def slice_hidden(model, keep: torch.Tensor) -> None:
    """Keep hidden dimensions `keep` everywhere (weight subcloning, Samragh et al. 2023)."""
    keep = keep.sort().values
    emb = model.bert.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        setattr(emb, name, _slice_embedding(getattr(emb, name), keep))
    emb.LayerNorm = _slice_layernorm(emb.LayerNorm, keep)
    for layer in layers_of(model):
        att = layer.attention
        att.self.query, att.self.key, att.self.value = (
            prune_linear_layer(m, keep, dim=1) for m in (att.self.query, att.self.key, att.self.value))
        att.output.dense = prune_linear_layer(att.output.dense, keep, dim=0)
        att.output.LayerNorm = _slice_layernorm(att.output.LayerNorm, keep)
        layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, keep, dim=1)
        layer.output.dense = prune_linear_layer(layer.output.dense, keep, dim=0)
        layer.output.LayerNorm = _slice_layernorm(layer.output.LayerNorm, keep)
    if model.bert.pooler is not None:
        dense = prune_linear_layer(model.bert.pooler.dense, keep, dim=0)
        model.bert.pooler.dense = prune_linear_layer(dense, keep, dim=1)
    model.classifier = prune_linear_layer(model.classifier, keep, dim=1)
    model.config.hidden_size = len(keep)


def sync_config(model) -> None:
    """Keep the HF config truthful about the largest per-layer sizes after cuts."""
    shape = shape_of(model)
    model.config.hidden_size = shape.hidden
    model.config.num_hidden_layers = shape.layers
    model.config.intermediate_size = max(shape.ffn)
    model.config.num_attention_heads = shape.hidden // HEAD_DIM
    model.config.search_heads_per_layer = list(shape.heads)
    model.config.search_ffn_per_layer = list(shape.ffn)


@dataclass
class Importance:
    """Calibration statistics that rank what to keep when cutting (higher = more important)."""

    hidden: torch.Tensor  # [hidden]: mean |activation| over the residual stream
    heads: list  # per layer [heads]: mean norm of each head's contribution to the layer output
    ffn: list  # per layer [ffn]: mean |activation| x norm of its output weights


@torch.no_grad()
def measure_importance(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Importance:
    """Norm-based scores; BACKENDS.md: mean attention probability is identical for every head."""
    model.eval()
    stats = {"hidden": [], "heads": {}, "ffn": {}}
    mask = attention_mask.bool()
    hooks = []

    def residual_hook(_m, _inp, out):
        stats["hidden"].append(out[mask].abs().mean(0))

    def head_hook(i, dense):
        def hook(_m, inp):
            ctx = inp[0][mask]  # [tokens, heads*d]
            heads = ctx.shape[-1] // HEAD_DIM
            w = dense.weight.view(dense.out_features, heads, HEAD_DIM)  # [D, H, d]
            contrib = torch.einsum("thd,ehd->the", ctx.view(-1, heads, HEAD_DIM), w)
            stats["heads"][i] = contrib.norm(dim=-1).mean(0)
        return hook

    def ffn_hook(i, dense):
        def hook(_m, inp):
            stats["ffn"][i] = inp[0][mask].abs().mean(0) * dense.weight.norm(dim=0)
        return hook

    hooks.append(model.bert.embeddings.LayerNorm.register_forward_hook(residual_hook))
    for i, layer in enumerate(layers_of(model)):
        hooks.append(layer.output.LayerNorm.register_forward_hook(residual_hook))
        dense = layer.attention.output.dense
        hooks.append(dense.register_forward_pre_hook(head_hook(i, dense)))
        hooks.append(layer.output.dense.register_forward_pre_hook(ffn_hook(i, layer.output.dense)))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask)
    finally:
        for h in hooks:
            h.remove()
    n = len(layers_of(model))
    return Importance(hidden=torch.stack(stats["hidden"]).mean(0), heads=[stats["heads"][i] for i in range(n)],
                      ffn=[stats["ffn"][i] for i in range(n)])


def gradient_importance(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        labels: torch.Tensor) -> Importance:
    """First-order Taylor importance (Michel et al. 2019; Molchanov et al. 2019): per example, the loss
    change from removing a head or neuron, |sum over tokens of activation x dLoss/dactivation|, averaged
    over the calibration examples. `hidden` stays norm-based (width is cut before training, not here)."""
    if labels is None:
        raise ValueError("gradient importance needs the calibration labels")
    model.eval()
    acts, hooks = {}, []

    def keep(key):
        def hook(_m, inp):
            inp[0].retain_grad()
            acts[key] = inp[0]
        return hook

    for i, layer in enumerate(layers_of(model)):
        hooks.append(layer.attention.output.dense.register_forward_pre_hook(keep(("heads", i))))
        hooks.append(layer.output.dense.register_forward_pre_hook(keep(("ffn", i))))
    try:
        with torch.enable_grad():
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
            torch.nn.functional.cross_entropy(logits, labels).backward()
    finally:
        for h in hooks:
            h.remove()
    model.zero_grad(set_to_none=True)
    mask = attention_mask[..., None].float()
    n = len(layers_of(model))
    taylor = {key: ((a * a.grad).detach() * mask).sum(1) for key, a in acts.items()}  # [examples, units]
    heads = [taylor[("heads", i)].view(len(input_ids), -1, HEAD_DIM).sum(-1).abs().mean(0) for i in range(n)]
    ffn = [taylor[("ffn", i)].abs().mean(0) for i in range(n)]
    return Importance(hidden=measure_importance(model, input_ids, attention_mask).hidden, heads=heads, ffn=ffn)


@torch.no_grad()
def each_linear_input(model, linears, calibration: tuple, fn) -> None:
    """One forward over the calibration batch calling fn(linear, inputs over real tokens [tokens, in])
    for each of `linears`: the statistics GPTQ, Wanda and SmoothQuant read."""
    ids, mask = calibration
    keep = mask.bool()
    hooks = [lin.register_forward_pre_hook(lambda m, inp: fn(m, inp[0][keep])) for lin in linears]
    try:
        model(input_ids=ids, attention_mask=mask)
    finally:
        for h in hooks:
            h.remove()


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(scores, k).indices.sort().values


@torch.no_grad()
def to_standard(model):
    """An equivalent model with a stock BertConfig, so `from_pretrained` loads it without custom code.

    Pruned heads and FFN neurons come back as zeros: a head whose query, key, value and output
    weights are zero adds exactly nothing, and so does a neuron with zero weights (GELU(0) = 0).
    """
    from transformers import BertForSequenceClassification

    shape = shape_of(model)
    config = copy.deepcopy(model.config)
    config.num_attention_heads = shape.hidden // HEAD_DIM
    config.intermediate_size = max(shape.ffn)
    config.hidden_size, config.num_hidden_layers = shape.hidden, shape.layers
    config.vocab_size = shape.input_vocab
    for key in ("search_heads_per_layer", "search_ffn_per_layer", "search_teacher_layers"):
        config.__dict__.pop(key, None)
    out = BertForSequenceClassification(config).eval()
    state = out.state_dict()
    for key, value in state.items():
        value.zero_()
    for key, value in model.state_dict().items():
        if key not in state:  # the trimmed embedding's own keys: handled below
            continue
        target = state[key]
        target[tuple(slice(0, n) for n in value.shape)] = value  # kept units first, zeros after
    words = model.bert.embeddings.word_embeddings
    if hasattr(words, "full_weight"):  # trimmed vocabulary: expand back, every id to the row it used
        state["bert.embeddings.word_embeddings.weight"] = words.full_weight()
    out.load_state_dict(state)
    return out

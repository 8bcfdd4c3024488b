"""A second model family, built here and nowhere in the package: a tiny pre-LN transformer classifier in
plain torch (its own module names, input names `ids`/`mask`, output `scores`, mean pooling, no pooler, no
segment or position tables). It proves the seam: the same pipeline code screens, builds and measures it."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import save_file
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

from search.families.base import (BATCH, SEQUENCE, ExportSpec, Forward, Importance, InputSpec, ModelShape, Operator,
                                  Tensor, TransformerCuts)


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, head_dim: int, ffn: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        a = heads * head_dim
        self.q, self.k, self.v, self.o = nn.Linear(hidden, a), nn.Linear(hidden, a), nn.Linear(hidden, a), \
            nn.Linear(a, hidden)
        self.up, self.down = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)

    def forward(self, x, mask):
        b, s, _ = x.shape
        h = self.ln1(x)
        split = lambda t: t.view(b, s, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~mask[:, None, None, :].bool(), -1e4)
        att = scores.softmax(-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, s, self.heads * self.head_dim))
        return x + self.down(torch.relu(self.up(self.ln2(x)))), att


class ToyClassifier(nn.Module):
    def __init__(self, vocab=40, hidden=32, heads=4, head_dim=8, ffn=64, layers=3, classes=2):
        super().__init__()
        self.config = SimpleNamespace(vocab=vocab, hidden=hidden, heads=heads, head_dim=head_dim, ffn=ffn,
                                      layers=layers, classes=classes)
        self.embed = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList([Block(hidden, heads, head_dim, ffn) for _ in range(layers)])
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, ids, mask):  # what the exported artifact computes: scores only
        return self.run(ids, mask)[0]

    def run(self, ids, mask):
        """Scores, every layer's output (embeddings first) and every layer's attention."""
        x = self.embed(ids)
        states, atts = [x], []
        for block in self.blocks:
            x, att = block(x, mask)
            states.append(x)
            atts.append(att)
        m = mask[..., None].to(x.dtype)
        pooled = (self.norm(x) * m).sum(1) / m.sum(1).clamp_min(1)
        return self.head(pooled), tuple(states), tuple(atts)

    def save_pretrained(self, directory):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / "model.safetensors"))
        (directory / "config.json").write_text(json.dumps(vars(self.config), default=str))


def _slice_ln(ln: nn.LayerNorm, keep) -> nn.LayerNorm:
    new = nn.LayerNorm(len(keep))
    new.weight.data, new.bias.data = ln.weight.data[keep].clone(), ln.bias.data[keep].clone()
    return new


class ToyFamily(TransformerCuts):
    name = "toy_cls"
    hf_auto_class = "ToyClassifier"

    def matches(self, model) -> bool:
        return isinstance(model, ToyClassifier)

    def load(self, model_dir, num_outputs, file_for_errors, safetensors_only=True):
        raise NotImplementedError("the toy family is built in tests, not loaded")

    def tokenize(self, tokenizer, texts, max_length):
        raise NotImplementedError("the toy family takes pre-built features")

    def token_mask(self, features):
        return features["mask"].bool()

    def token_ids(self, features):
        return features["ids"]

    def forward(self, model, features, hidden_states=False, attentions=False):
        scores, states, atts = model.run(features["ids"], features["mask"])
        return Forward(scores, states if hidden_states else None, atts if attentions else None)

    def shape_of(self, model) -> ModelShape:
        words = model.embed
        return ModelShape(family=self.name, layers=len(model.blocks), hidden=model.norm.normalized_shape[0],
                          heads=tuple(b.heads for b in model.blocks), ffn=tuple(b.up.out_features for b in model.blocks),
                          vocab=words.num_embeddings, head_dim=model.config.head_dim, outputs=model.head.out_features,
                          id_map_size=len(words.id_map) if hasattr(words, "id_map") else 0)

    def tensors(self, shape):
        out = []
        for i, (heads, ffn) in enumerate(zip(shape.heads, shape.ffn)):
            a = heads * shape.head_dim
            for name, o, k in (("q", a, shape.hidden), ("k", a, shape.hidden), ("v", a, shape.hidden),
                               ("o", shape.hidden, a), ("up", ffn, shape.hidden), ("down", shape.hidden, ffn)):
                out.append(Tensor(f"L{i}.{name}", "block_linear", o, k, layer=i))
        head = [Tensor("head", "head_linear", shape.outputs, shape.hidden)]
        vectors = sum(t.rows for t in out + head) + 2 * shape.hidden * (2 * shape.layers + 1)
        out += head + [Tensor("biases+norms", "vector", vectors), Tensor("words", "embedding", shape.vocab, shape.hidden)]
        if shape.id_map_size:
            out.append(Tensor("vocab_id_map", "index_table", shape.id_map_size))
        return out

    def operators(self, shape, batch, seq):
        tokens = batch * seq
        ops = []
        for i, (heads, ffn) in enumerate(zip(shape.heads, shape.ffn)):
            a = heads * shape.head_dim
            for name, k, o in (("qkv", shape.hidden, 3 * a), ("o", a, shape.hidden), ("up", shape.hidden, ffn),
                               ("down", ffn, shape.hidden)):
                ops.append(Operator(f"L{i}.{name}", 2 * tokens * k * o, 4 * tokens * (k + o), weight_elements=k * o,
                                    layer=i, linear=True, in_features=k))
            scores = batch * heads * seq * seq
            ops.append(Operator(f"L{i}.attention", 4 * scores * shape.head_dim, 4 * (3 * tokens * a + scores)))
        ops.append(Operator("head", 2 * batch * shape.hidden * shape.outputs, 4 * shape.hidden * shape.outputs))
        return ops

    def activation_bytes(self, shape, batch, seq):
        return 4 * max(2 * batch * seq * shape.hidden + 3 * batch * seq * h * shape.head_dim + batch * h * seq * seq
                       + batch * seq * f for h, f in zip(shape.heads, shape.ffn))

    def random_model(self, shape, seed):
        torch.manual_seed(seed)
        return ToyClassifier(shape.vocab, shape.hidden, shape.heads[0], shape.head_dim, shape.ffn[0], shape.layers,
                             shape.outputs).eval()

    def blocks(self, model):
        return model.blocks

    def block_linears(self, block):
        return [block.q, block.k, block.v, block.o, block.up, block.down]

    def embeddings(self, model):
        return [getattr(model.embed, "embedding", model.embed)]

    def word_embedding(self, model):
        return model.embed

    def set_word_embedding(self, model, module):
        model.embed = module

    def select_layers(self, model, keep):
        model.blocks = nn.ModuleList([model.blocks[i] for i in keep])

    def slice_heads(self, block, keep_heads):
        d = block.head_dim
        index = torch.cat([torch.arange(h * d, (h + 1) * d) for h in sorted(keep_heads)])
        block.q, block.k, block.v = (prune_linear_layer(m, index, dim=0) for m in (block.q, block.k, block.v))
        block.o = prune_linear_layer(block.o, index, dim=1)
        block.heads = len(keep_heads)

    def slice_ffn(self, block, keep):
        keep = keep.sort().values
        block.up, block.down = prune_linear_layer(block.up, keep, dim=0), prune_linear_layer(block.down, keep, dim=1)

    def slice_hidden(self, model, keep):
        keep = keep.sort().values
        emb = model.embed
        new = nn.Embedding(emb.num_embeddings, len(keep))
        new.weight.data = emb.weight.data[:, keep].clone()
        model.embed = new
        for b in model.blocks:
            b.ln1, b.ln2 = _slice_ln(b.ln1, keep), _slice_ln(b.ln2, keep)
            b.q, b.k, b.v = (prune_linear_layer(m, keep, dim=1) for m in (b.q, b.k, b.v))
            b.o, b.down = prune_linear_layer(b.o, keep, dim=0), prune_linear_layer(b.down, keep, dim=0)
            b.up = prune_linear_layer(b.up, keep, dim=1)
        model.norm = _slice_ln(model.norm, keep)
        model.head = prune_linear_layer(model.head, keep, dim=1)

    def sync_config(self, model):
        shape = self.shape_of(model)
        model.config.hidden, model.config.layers = shape.hidden, shape.layers

    @torch.no_grad()
    def reinitialise(self, model, generator):
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0.0, 0.02, generator=generator)

    @torch.no_grad()
    def measure_importance(self, model, features):
        mask = self.token_mask(features)
        _, states, _ = model.run(features["ids"], features["mask"])
        heads = [torch.stack([b.q.weight.view(b.heads, -1).norm(dim=1)]).squeeze(0) for b in model.blocks]
        ffn = [b.down.weight.norm(dim=0) for b in model.blocks]
        return Importance(hidden=torch.stack([s[mask].abs().mean(0) for s in states]).mean(0), heads=heads, ffn=ffn)

    def gradient_importance(self, model, features, labels, loss):
        return self.measure_importance(model, features)

    def export_spec(self, shape):
        ids = torch.ones(1, 8, dtype=torch.long)
        return ExportSpec(inputs=("ids", "mask"), outputs=("scores",), example={"ids": ids, "mask": torch.ones_like(ids)},
                          dynamic_axes={"ids": {0: "batch", 1: "sequence"}, "mask": {0: "batch", 1: "sequence"},
                                        "scores": {0: "batch"}},
                          probe_inputs=(InputSpec("ids", (BATCH, SEQUENCE), "int64", "ids", high=shape.input_vocab),
                                        InputSpec("mask", (BATCH, SEQUENCE), "int64", "ones")))

    def to_standard(self, model):
        return model  # plain torch: already its own standard form

"""BERT-family encoders with a sequence-classification head (BERT, MiniLM): the first model family.

Every BERT-specific fact lives here: module paths, config fields, input names, the output attribute,
the tensors and operators of a shape. Slices use transformers' prune_linear_layer; the patched
attention fields (num_attention_heads, all_head_size) are the ones BertSelfAttention.forward reads,
so a cut model runs and exports as is.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

from .base import Importance, Limits, ModelShape, Operator, Tensor, TransformerCuts
from .hf_text import TextInputs, load_pretrained


def _slice_layernorm(ln: nn.LayerNorm, keep: torch.Tensor) -> nn.LayerNorm:
    new = nn.LayerNorm(len(keep), eps=ln.eps)
    new.weight.data, new.bias.data = ln.weight.data[keep].clone(), ln.bias.data[keep].clone()
    return new


def _slice_embedding(emb: nn.Embedding, keep: torch.Tensor) -> nn.Embedding:
    new = nn.Embedding(emb.num_embeddings, len(keep), padding_idx=emb.padding_idx)
    new.weight.data = emb.weight.data[:, keep].clone()
    return new


class BertClassifier(TextInputs, TransformerCuts):
    name = "bert_cls"
    hf_auto_class = "AutoModelForSequenceClassification"

    # -- identity and loading ---------------------------------------------------------------------------
    def matches(self, model) -> bool:
        return hasattr(model, "bert") and hasattr(model, "classifier")

    def load(self, model_dir: Path, num_outputs: int, file_for_errors: str, safetensors_only: bool = True):
        from transformers import AutoModelForSequenceClassification

        # eager attention: the ONNX exporter and onnxruntime's BERT fusion expect the explicit graph
        return load_pretrained(AutoModelForSequenceClassification, model_dir, file_for_errors, ("bert",),
                               "the student builder supports BERT-family encoders only (e.g. MiniLM)",
                               safetensors_only, num_labels=num_outputs, attn_implementation="eager")

    def limits_from_config(self, model_dir: Path) -> Limits | None:
        from transformers import AutoConfig

        try:
            c = AutoConfig.from_pretrained(model_dir)
            return Limits(layers=c.num_hidden_layers, hidden=c.hidden_size, ffn=c.intermediate_size,
                          head_dim=c.hidden_size // c.num_attention_heads, positions=c.max_position_embeddings)
        except (OSError, ValueError, AttributeError):  # unreadable: load() reports it with the file and key
            return None

    # -- shape --------------------------------------------------------------------------------------------
    def shape_of(self, model) -> ModelShape:
        emb = model.bert.embeddings
        layers = self.blocks(model)
        return ModelShape(
            family=self.name, layers=len(layers), hidden=emb.word_embeddings.embedding_dim,
            heads=tuple(layer.attention.self.num_attention_heads for layer in layers),
            ffn=tuple(layer.intermediate.dense.out_features for layer in layers),
            vocab=emb.word_embeddings.num_embeddings,
            head_dim=layers[0].attention.self.attention_head_size if len(layers) else 32,
            positions=emb.position_embeddings.num_embeddings, segments=emb.token_type_embeddings.num_embeddings,
            outputs=model.classifier.out_features,
            id_map_size=len(emb.word_embeddings.id_map) if hasattr(emb.word_embeddings, "id_map") else 0)

    def linear_shapes(self, shape: ModelShape) -> list[tuple[int, int]]:
        """(in_features, out_features) of every encoder Linear, per layer in forward order."""
        out = []
        for heads, ffn in zip(shape.heads, shape.ffn):
            a = heads * shape.head_dim
            out += [(shape.hidden, a)] * 3 + [(a, shape.hidden), (shape.hidden, ffn), (ffn, shape.hidden)]
        return out

    def tensors(self, shape: ModelShape) -> list[Tensor]:
        names = ("query", "key", "value", "attn_out", "ffn_up", "ffn_down")
        out = [Tensor(f"L{j // 6}.{names[j % 6]}", "block_linear", o, i, layer=j // 6)
               for j, (i, o) in enumerate(self.linear_shapes(shape))]
        head = [Tensor("pooler", "head_linear", shape.hidden, shape.hidden),
                Tensor("classifier", "head_linear", shape.outputs, shape.hidden)]
        biases = sum(t.rows for t in out + head)
        norms = 2 * shape.hidden * (2 * shape.layers + 1)  # LayerNorm gamma/beta: embeddings + 2 per layer
        out += head + [Tensor("biases+norms", "vector", biases + norms)]
        out += [Tensor(name, "embedding", rows, shape.hidden)
                for name, rows in (("word", shape.vocab), ("position", shape.positions), ("segment", shape.segments))]
        if shape.id_map_size:
            out.append(Tensor("vocab_id_map", "index_table", shape.id_map_size))
        return out

    def operators(self, shape: ModelShape, batch: int, seq: int) -> list[Operator]:
        tokens, h, d = batch * seq, shape.hidden, shape.head_dim
        ops = [Operator("embeddings+layernorm", 8 * tokens * h, 4 * tokens * h * 4)]

        def linear(name, i, o, layer):
            ops.append(Operator(name, 2 * tokens * i * o, 4 * tokens * (i + o), weight_elements=i * o, layer=layer,
                                linear=True, in_features=i))

        def elementwise(name, n, flops_per=4):
            ops.append(Operator(name, flops_per * n, 8 * n))

        for layer, (heads, ffn) in enumerate(zip(shape.heads, shape.ffn)):
            a = heads * d
            for proj in ("q", "k", "v"):
                linear(f"L{layer}.{proj}", h, a, layer)
            scores = batch * heads * seq * seq
            ops.append(Operator(f"L{layer}.qk", 2 * scores * d, 4 * (2 * tokens * a + scores)))
            elementwise(f"L{layer}.softmax", scores, 5)
            ops.append(Operator(f"L{layer}.pv", 2 * scores * d, 4 * (scores + 2 * tokens * a)))
            linear(f"L{layer}.attn_out", a, h, layer)
            elementwise(f"L{layer}.add_ln1", tokens * h, 8)
            linear(f"L{layer}.ffn_up", h, ffn, layer)
            elementwise(f"L{layer}.gelu", tokens * ffn, 8)
            linear(f"L{layer}.ffn_down", ffn, h, layer)
            elementwise(f"L{layer}.add_ln2", tokens * h, 8)
        # the pooler and classifier stay fp32 in every artifact: their weights count as fp32 traffic
        ops.append(Operator("pooler+classifier", 2 * batch * h * (h + shape.outputs), 4 * h * (h + shape.outputs)))
        return ops

    def activation_bytes(self, shape: ModelShape, batch: int, seq: int) -> int:
        """Peak fp32 activations of one encoder layer (the runtime frees layer by layer):
        residual in/out, Q/K/V, attention scores and probabilities, FFN intermediate."""
        b, s = batch, seq
        per_layer = [2 * b * s * shape.hidden + 3 * b * s * h * shape.head_dim + 2 * b * h * s * s + b * s * f
                     for h, f in zip(shape.heads, shape.ffn)]
        return 4 * max(per_layer + [2 * b * s * shape.hidden])

    def random_model(self, shape: ModelShape, seed: int):
        from transformers import BertConfig, BertForSequenceClassification

        torch.manual_seed(seed)
        config = BertConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                            num_attention_heads=shape.hidden // shape.head_dim, intermediate_size=shape.ffn[0],
                            max_position_embeddings=shape.positions, type_vocab_size=shape.segments or 2,
                            num_labels=shape.outputs or 2, attn_implementation="eager")
        model = BertForSequenceClassification(config).eval()
        for layer in self.blocks(model):
            self.slice_heads(layer, list(range(shape.heads[0])))
        return model

    # -- what compression acts on ------------------------------------------------------------------------
    def blocks(self, model) -> nn.ModuleList:
        return model.bert.encoder.layer

    def block_linears(self, block) -> list[nn.Linear]:
        att = block.attention
        return [att.self.query, att.self.key, att.self.value, att.output.dense, block.intermediate.dense,
                block.output.dense]

    def embeddings(self, model) -> list[nn.Embedding]:
        emb = model.bert.embeddings
        return [getattr(m, "embedding", m) for m in (emb.word_embeddings, emb.position_embeddings,
                                                     emb.token_type_embeddings)]

    def word_embedding(self, model) -> nn.Module:
        return model.bert.embeddings.word_embeddings

    def set_word_embedding(self, model, module: nn.Module) -> None:
        model.bert.embeddings.word_embeddings = module

    # -- cuts -------------------------------------------------------------------------------------------
    def select_layers(self, model, keep: list[int]) -> None:
        layers = self.blocks(model)
        model.bert.encoder.layer = nn.ModuleList([layers[i] for i in keep])
        for new_idx, layer in enumerate(model.bert.encoder.layer):
            layer.attention.self.layer_idx = new_idx
        model.config.num_hidden_layers = len(keep)

    def slice_heads(self, block, keep_heads: list[int]) -> None:
        att = block.attention.self
        d = att.attention_head_size
        index = torch.cat([torch.arange(h * d, (h + 1) * d) for h in sorted(keep_heads)])
        att.query, att.key, att.value = (prune_linear_layer(m, index, dim=0) for m in (att.query, att.key, att.value))
        block.attention.output.dense = prune_linear_layer(block.attention.output.dense, index, dim=1)
        att.num_attention_heads = len(keep_heads)
        att.all_head_size = len(keep_heads) * d

    def slice_ffn(self, block, keep: torch.Tensor) -> None:
        keep = keep.sort().values
        block.intermediate.dense = prune_linear_layer(block.intermediate.dense, keep, dim=0)
        block.output.dense = prune_linear_layer(block.output.dense, keep, dim=1)

    def slice_hidden(self, model, keep: torch.Tensor) -> None:
        """Keep hidden dimensions `keep` everywhere (weight subcloning, Samragh et al. 2023)."""
        keep = keep.sort().values
        emb = model.bert.embeddings
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            setattr(emb, name, _slice_embedding(getattr(emb, name), keep))
        emb.LayerNorm = _slice_layernorm(emb.LayerNorm, keep)
        for layer in self.blocks(model):
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

    def sync_config(self, model) -> None:
        """Keep the HF config truthful about the largest per-layer sizes after cuts."""
        shape = self.shape_of(model)
        model.config.hidden_size = shape.hidden
        model.config.num_hidden_layers = shape.layers
        model.config.intermediate_size = max(shape.ffn)
        model.config.num_attention_heads = shape.hidden // shape.head_dim
        model.config.search_heads_per_layer = list(shape.heads)
        model.config.search_ffn_per_layer = list(shape.ffn)

    @torch.no_grad()
    def reinitialise(self, model, generator: torch.Generator, std: float = 0.02) -> None:
        """BERT's own initialisation (normal(0, 0.02) weights, zero biases, unit LayerNorms) at the same shape;
        by hand because the cut model's heads x head_dim != hidden, which from_config cannot express."""
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.normal_(0.0, std, generator=generator)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()

    # -- importance -------------------------------------------------------------------------------------
    def importance_points(self, model) -> tuple[list, list, list]:
        blocks = self.blocks(model)
        residual = [model.bert.embeddings.LayerNorm] + [layer.output.LayerNorm for layer in blocks]
        attn_out = [(layer.attention.output.dense, layer.attention.self.attention_head_size) for layer in blocks]
        return residual, attn_out, [layer.output.dense for layer in blocks]

    def gradient_importance(self, model, features: dict, labels: torch.Tensor, loss) -> Importance:
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

        for i, layer in enumerate(self.blocks(model)):
            hooks.append(layer.attention.output.dense.register_forward_pre_hook(keep(("heads", i))))
            hooks.append(layer.output.dense.register_forward_pre_hook(keep(("ffn", i))))
        try:
            with torch.enable_grad():
                loss(self.forward(model, features).outputs, labels).backward()
        finally:
            for h in hooks:
                h.remove()
        model.zero_grad(set_to_none=True)
        mask = self.token_mask(features)[..., None].float()
        n = len(self.blocks(model))
        n_examples = len(labels)
        taylor = {key: ((a * a.grad).detach() * mask).sum(1) for key, a in acts.items()}  # [examples, units]
        heads = [taylor[("heads", i)].view(n_examples, -1, self.blocks(model)[i].attention.self.attention_head_size)
                 .sum(-1).abs().mean(0) for i in range(n)]
        ffn = [taylor[("ffn", i)].abs().mean(0) for i in range(n)]
        return Importance(hidden=self.measure_importance(model, features).hidden, heads=heads, ffn=ffn)

    # -- leaving the search -------------------------------------------------------------------------------
    def optimizer_hints(self, shape: ModelShape) -> dict:
        """onnxruntime's BERT fusion; 0/0 lets its optimizer detect sizes, and fusion is skipped where pruned
        heads break the pattern."""
        uniform = len(set(shape.heads)) == 1 and shape.heads[0] * shape.head_dim == shape.hidden
        heads, hidden = (shape.heads[0], shape.hidden) if uniform else (0, 0)
        return {"model_type": "bert", "num_heads": heads, "hidden_size": hidden}

    @torch.no_grad()
    def to_standard(self, model):
        """Pruned heads and FFN neurons come back as zeros: a head whose query, key, value and output
        weights are zero adds exactly nothing, and so does a neuron with zero weights (GELU(0) = 0)."""
        from transformers import BertForSequenceClassification

        shape = self.shape_of(model)
        config = copy.deepcopy(model.config)
        config.num_attention_heads = shape.hidden // shape.head_dim
        config.intermediate_size = max(shape.ffn)
        config.hidden_size, config.num_hidden_layers = shape.hidden, shape.layers
        config.vocab_size = shape.input_vocab
        for key in ("search_heads_per_layer", "search_ffn_per_layer", "search_teacher_layers",
                    "search_teacher_heads"):
            config.__dict__.pop(key, None)
        out = BertForSequenceClassification(config).eval()
        state = out.state_dict()
        for value in state.values():
            value.zero_()
        for key, value in model.state_dict().items():
            if key not in state:  # the trimmed embedding's own keys: handled below
                continue
            target = state[key]
            target[tuple(slice(0, n) for n in value.shape)] = value  # kept units first, zeros after
        words = self.word_embedding(model)
        if hasattr(words, "full_weight"):  # trimmed vocabulary: expand back, every id to the row it used
            state["bert.embeddings.word_embeddings.weight"] = words.full_weight()
        out.load_state_dict(state)
        return out

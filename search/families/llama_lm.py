"""Llama-architecture causal language models (Llama, SmolLM2, Qwen2-style): the second model family, the
first step of the edge-LLM work (issue 10). Grouped-query attention is cut right: a KV head and its group of
query heads are kept or removed together. Tied input/output embeddings stay tied through every cut.

What is here: shapes (query and KV heads per layer, head width, FFN, vocabulary, tied embeddings), the cuts
(layers, head groups, FFN channels, width), norm-based importance and a block-importance score for depth
(how little a block changes its input), the forward call, tensors and operators of a shape, and the way
back to a stock `LlamaForCausalLM`. The causal_lm flow (flows/causal_lm/) searches over it and ships GGUF through
the llama.cpp backend (backends/llama_cpp/).
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

from ..errors import CandidateError
from .base import Importance, Limits, ModelShape, Operator, Tensor, TransformerCuts
from .hf_text import TextInputs, load_pretrained

MODEL_TYPES = ("llama", "qwen2", "mistral")  # the same block: RMSNorm, RoPE, GQA attention, SwiGLU MLP


def _slice_rmsnorm(norm: nn.Module, keep: torch.Tensor) -> nn.Module:
    new = copy.copy(norm)  # the same class and eps, a sliced weight
    new.weight = nn.Parameter(norm.weight.data[keep].clone())
    return new


class LlamaLM(TextInputs, TransformerCuts):
    name = "llama_lm"
    hf_auto_class = "AutoModelForCausalLM"
    task_types = ("causal_lm",)
    forward_kwargs = {"use_cache": False}  # no KV cache in the search's own passes (nor in an ONNX export)
    output_axes = {0: "batch", 1: "sequence"}

    # -- identity and loading ---------------------------------------------------------------------------
    def matches(self, model) -> bool:
        return getattr(getattr(model, "config", None), "model_type", None) in MODEL_TYPES and hasattr(model, "lm_head")

    def load(self, model_dir: Path, num_outputs: int, file_for_errors: str, safetensors_only: bool = True):
        from transformers import AutoModelForCausalLM

        return load_pretrained(AutoModelForCausalLM, model_dir, file_for_errors, MODEL_TYPES,
                               f"this family takes {', '.join(MODEL_TYPES)} causal LMs", safetensors_only,
                               dtype=torch.float32, attn_implementation="eager", use_cache=False)

    def tokenize(self, tokenizer, texts: list[str], max_length: int) -> dict:
        if tokenizer.pad_token is None:  # causal LMs often ship without one; padding is masked anyway
            tokenizer.pad_token = tokenizer.eos_token
        return super().tokenize(tokenizer, texts, max_length)

    # -- shape --------------------------------------------------------------------------------------------
    def _head_dim(self, model) -> int:
        return model.model.layers[0].self_attn.head_dim

    def shape_of(self, model) -> ModelShape:
        d = self._head_dim(model)
        layers = self.blocks(model)
        emb = model.model.embed_tokens
        return ModelShape(
            family=self.name, layers=len(layers), hidden=emb.embedding_dim,
            heads=tuple(b.self_attn.q_proj.out_features // d for b in layers),
            kv_heads=tuple(b.self_attn.k_proj.out_features // d for b in layers),
            ffn=tuple(b.mlp.gate_proj.out_features for b in layers), vocab=emb.num_embeddings, head_dim=d,
            outputs=model.lm_head.out_features, tied_embeddings=model.lm_head.weight is emb.weight)

    def limits(self, teacher: ModelShape) -> Limits:
        """Width is not tied to heads here (head_dim is fixed by RoPE, not hidden / heads): any number of whole
        KV groups up to the teacher's."""
        return Limits(layers=teacher.layers, hidden=teacher.hidden, ffn=min(teacher.ffn), head_dim=teacher.head_dim,
                      head_group=self.group_size(teacher), heads=max(teacher.heads))

    def group_size(self, shape: ModelShape) -> int:
        """Query heads per KV head: students keep whole groups."""
        return shape.heads[0] // shape.kv_heads[0]

    def tensors(self, shape: ModelShape) -> list[Tensor]:
        out, d = [], shape.head_dim
        for i, (heads, kv, ffn) in enumerate(zip(shape.heads, shape.kv_heads, shape.ffn)):
            for name, o, k in (("q", heads * d, shape.hidden), ("k", kv * d, shape.hidden), ("v", kv * d, shape.hidden),
                               ("o", shape.hidden, heads * d), ("gate", ffn, shape.hidden), ("up", ffn, shape.hidden),
                               ("down", shape.hidden, ffn)):
                out.append(Tensor(f"L{i}.{name}", "block_linear", o, k, layer=i))
        out.append(Tensor("norms", "vector", shape.hidden * (2 * shape.layers + 1)))
        out.append(Tensor("token_embd", "embedding", shape.vocab, shape.hidden))
        if not shape.tied_embeddings:  # a tied output head reads the embedding table: no bytes of its own
            out.append(Tensor("output", "head_linear", shape.outputs, shape.hidden))
        return out

    def operators(self, shape: ModelShape, batch: int, seq: int) -> list[Operator]:
        """One forward over `seq` tokens (prefill); decode is the same with seq = 1 against a KV cache."""
        tokens, h, d = batch * seq, shape.hidden, shape.head_dim
        ops = [Operator("embedding", 0, 8 * tokens * h)]

        def linear(name, k, o, layer):
            ops.append(Operator(name, 2 * tokens * k * o, 4 * tokens * (k + o), weight_elements=k * o, layer=layer,
                                linear=True, in_features=k))

        for i, (heads, kv, ffn) in enumerate(zip(shape.heads, shape.kv_heads, shape.ffn)):
            ops.append(Operator(f"L{i}.attn_norm", 4 * tokens * h, 8 * tokens * h))
            for name, o in (("q", heads * d), ("k", kv * d), ("v", kv * d)):
                linear(f"L{i}.{name}", h, o, i)
            scores = batch * heads * seq * seq
            ops.append(Operator(f"L{i}.attention", 4 * scores * d + 5 * scores,
                                4 * (tokens * (heads + 2 * kv) * d + 2 * scores)))
            linear(f"L{i}.o", heads * d, h, i)
            ops.append(Operator(f"L{i}.ffn_norm", 4 * tokens * h, 8 * tokens * h))
            linear(f"L{i}.gate", h, ffn, i)
            linear(f"L{i}.up", h, ffn, i)
            ops.append(Operator(f"L{i}.silu_mul", 6 * tokens * ffn, 12 * tokens * ffn))
            linear(f"L{i}.down", ffn, h, i)
        ops.append(Operator("output_norm", 4 * tokens * h, 8 * tokens * h))
        linear("output", h, shape.outputs, -1)
        return ops

    def activation_bytes(self, shape: ModelShape, batch: int, seq: int) -> int:
        """Peak fp32 activations of one layer plus the logits (the KV cache is the runtime's, priced apart)."""
        b, s, d = batch, seq, shape.head_dim
        per_layer = [2 * b * s * shape.hidden + b * s * (h + 2 * kv) * d + 2 * b * h * s * s + 3 * b * s * f
                     for h, kv, f in zip(shape.heads, shape.kv_heads, shape.ffn)]
        return 4 * (max(per_layer) + b * s * shape.outputs)

    def kv_cache_bytes(self, shape: ModelShape, context: int, bytes_per_element: float = 2.0) -> int:
        """K and V of every layer for `context` tokens (llama.cpp keeps them in f16 by default)."""
        return int(sum(2 * kv * shape.head_dim * context for kv in shape.kv_heads) * bytes_per_element)

    def random_model(self, shape: ModelShape, seed: int):
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                             num_attention_heads=shape.heads[0], num_key_value_heads=shape.kv_heads[0],
                             head_dim=shape.head_dim, intermediate_size=shape.ffn[0],
                             tie_word_embeddings=shape.tied_embeddings, attn_implementation="eager",
                             use_cache=False)
        return LlamaForCausalLM(config).eval()

    # -- what compression acts on ------------------------------------------------------------------------
    def blocks(self, model) -> nn.ModuleList:
        return model.model.layers

    def block_linears(self, block) -> list[nn.Linear]:
        a, m = block.self_attn, block.mlp
        return [a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj]

    def embeddings(self, model) -> list[nn.Embedding]:
        return [model.model.embed_tokens]

    def word_embedding(self, model) -> nn.Module:
        return model.model.embed_tokens

    def set_word_embedding(self, model, module: nn.Module) -> None:
        raise CandidateError("vocabulary trimming is for classifiers: a language model must still emit every token")

    # -- cuts -------------------------------------------------------------------------------------------
    def select_layers(self, model, keep: list[int]) -> None:
        layers = self.blocks(model)
        model.model.layers = nn.ModuleList([layers[i] for i in keep])
        for new_idx, layer in enumerate(model.model.layers):
            layer.self_attn.layer_idx = new_idx  # the KV cache is indexed by it
        model.config.num_hidden_layers = len(keep)
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = [model.config.layer_types[i] for i in keep]

    def top_heads(self, block, scores: torch.Tensor, k: int) -> torch.Tensor:
        """The k query heads of the k / group most important KV groups (a group scores its heads' sum)."""
        g = block.self_attn.num_key_value_groups
        n_groups = max(1, k // g)
        best = torch.topk(scores.view(-1, g).sum(-1), n_groups).indices.sort().values
        return torch.cat([torch.arange(grp * g, grp * g + g) for grp in best.tolist()])

    def slice_heads(self, block, keep_heads: list[int]) -> None:
        """Keep the KV groups of `keep_heads` (query-head indices), each whole: a KV head with all the query
        heads that read it."""
        att = block.self_attn
        d, g = att.head_dim, att.num_key_value_groups
        groups = sorted({h // g for h in keep_heads})
        q_index = torch.cat([torch.arange(h * d, (h + 1) * d) for grp in groups for h in range(grp * g, grp * g + g)])
        kv_index = torch.cat([torch.arange(grp * d, (grp + 1) * d) for grp in groups])
        att.q_proj = prune_linear_layer(att.q_proj, q_index, dim=0)
        att.k_proj = prune_linear_layer(att.k_proj, kv_index, dim=0)
        att.v_proj = prune_linear_layer(att.v_proj, kv_index, dim=0)
        att.o_proj = prune_linear_layer(att.o_proj, q_index, dim=1)

    def slice_ffn(self, block, keep: torch.Tensor) -> None:
        keep = keep.sort().values
        m = block.mlp
        m.gate_proj = prune_linear_layer(m.gate_proj, keep, dim=0)
        m.up_proj = prune_linear_layer(m.up_proj, keep, dim=0)
        m.down_proj = prune_linear_layer(m.down_proj, keep, dim=1)

    def slice_hidden(self, model, keep: torch.Tensor) -> None:
        keep = keep.sort().values
        tied = model.lm_head.weight is model.model.embed_tokens.weight
        emb = model.model.embed_tokens
        new = nn.Embedding(emb.num_embeddings, len(keep), padding_idx=emb.padding_idx)
        new.weight.data = emb.weight.data[:, keep].clone()
        model.model.embed_tokens = new
        for layer in self.blocks(model):
            a, m = layer.self_attn, layer.mlp
            layer.input_layernorm = _slice_rmsnorm(layer.input_layernorm, keep)
            layer.post_attention_layernorm = _slice_rmsnorm(layer.post_attention_layernorm, keep)
            a.q_proj, a.k_proj, a.v_proj = (prune_linear_layer(x, keep, dim=1) for x in (a.q_proj, a.k_proj, a.v_proj))
            a.o_proj = prune_linear_layer(a.o_proj, keep, dim=0)
            m.gate_proj, m.up_proj = (prune_linear_layer(x, keep, dim=1) for x in (m.gate_proj, m.up_proj))
            m.down_proj = prune_linear_layer(m.down_proj, keep, dim=0)
        model.model.norm = _slice_rmsnorm(model.model.norm, keep)
        model.lm_head = prune_linear_layer(model.lm_head, keep, dim=1)
        if tied:
            model.lm_head.weight = model.model.embed_tokens.weight
        model.config.hidden_size = len(keep)

    def sync_config(self, model) -> None:
        shape = self.shape_of(model)
        c = model.config
        c.hidden_size, c.num_hidden_layers, c.intermediate_size = shape.hidden, shape.layers, max(shape.ffn)
        c.head_dim = shape.head_dim  # no longer hidden / heads once either is cut
        c.num_attention_heads, c.num_key_value_heads = max(shape.heads), max(shape.kv_heads)
        c.search_heads_per_layer, c.search_kv_heads_per_layer = list(shape.heads), list(shape.kv_heads)
        c.search_ffn_per_layer = list(shape.ffn)

    @torch.no_grad()
    def reinitialise(self, model, generator: torch.Generator, std: float = 0.02) -> None:
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std, generator=generator)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif hasattr(module, "variance_epsilon"):  # RMSNorm
                module.weight.fill_(1.0)

    # -- importance -------------------------------------------------------------------------------------
    def importance_points(self, model) -> tuple[list, list, list]:
        blocks = self.blocks(model)
        return (list(blocks), [(b.self_attn.o_proj, b.self_attn.head_dim) for b in blocks],
                [b.mlp.down_proj for b in blocks])

    @torch.no_grad()
    def block_importance(self, model, features: dict) -> torch.Tensor:
        """Per layer: 1 - cosine(input, output) of the residual stream over real tokens (ShortGPT's block
        influence): a block that hardly changes its input is the first to drop."""
        mask = self.token_mask(features)
        out = self.forward(model, features, hidden_states=True).hidden_states
        scores = []
        for i in range(len(self.blocks(model))):
            a, b = out[i][mask], out[i + 1][mask]
            scores.append(1 - torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())
        return torch.stack(scores)

    def gradient_importance(self, model, features: dict, labels: torch.Tensor, loss) -> Importance:
        raise CandidateError("gradient importance is not built for the llama_lm family yet; use prune.importance: norm")

    # -- leaving the search -------------------------------------------------------------------------------
    @torch.no_grad()
    def to_standard(self, model):
        """A stock LlamaForCausalLM: every layer at the largest kept head and FFN counts, the cut heads and
        channels stored as zeros (a zero query/key/value head and a zero FFN channel add nothing; kept KV
        groups come first, so each kept query head still reads its own KV head)."""
        from transformers import LlamaForCausalLM

        shape = self.shape_of(model)
        config = copy.deepcopy(model.config)
        for key in ("search_heads_per_layer", "search_kv_heads_per_layer", "search_ffn_per_layer",
                    "search_teacher_layers", "search_teacher_heads"):
            config.__dict__.pop(key, None)
        config.hidden_size, config.num_hidden_layers, config.head_dim = shape.hidden, shape.layers, shape.head_dim
        config.num_attention_heads, config.num_key_value_heads = max(shape.heads), max(shape.kv_heads)
        config.intermediate_size = max(shape.ffn)
        config.model_type = "llama"
        out = LlamaForCausalLM(config).eval()
        state = out.state_dict()
        for value in state.values():
            value.zero_()
        for key, value in model.state_dict().items():
            if key in state:
                state[key][tuple(slice(0, n) for n in value.shape)] = value
        out.load_state_dict(state)
        if shape.tied_embeddings:
            out.tie_weights()
        return out

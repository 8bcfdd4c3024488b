"""Write a Llama-architecture torch model as an F32 GGUF that llama.cpp runs and quantizes.

Why by hand: llama.cpp's converter (convert_hf_to_gguf.py) is a script in its source tree, not in any
package the set-up can install (`gguf` ships only the file format). What it does for a Llama model is small
and written again here from it: the tensor names, the hyperparameter keys, and the permutation of the query
and key rows from Hugging Face's rotate-half RoPE layout to llama.cpp's interleaved one (`LlamaModel.permute`).
The tokenizer is not converted: its keys are copied from a template GGUF of the same vocabulary (the teacher's
own GGUF), so the student tokenizes exactly as the teacher does in llama.cpp.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...errors import CandidateError
from ...run_dir import _tag

ARCH = "llama"
# keys of the template that describe the teacher's weights, not the tokenizer: written fresh for each model
_OWN_KEYS = ("general.architecture", "general.file_type", "general.quantization_version", "general.size_label")


def permute_rope(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of a query/key projection (or bias), per head, from rotate-half to interleaved pairs (llama.cpp's
    convert_hf_to_gguf.py, LlamaModel.permute)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensors_of(model) -> list[tuple[str, torch.Tensor]]:
    """(GGUF name, fp32 tensor) for every weight of a stock LlamaForCausalLM, in llama.cpp's names."""
    c = model.config
    if c.model_type != ARCH:
        raise CandidateError(f"the llama.cpp backend writes model_type 'llama' GGUFs; this model is {c.model_type!r}")
    heads, kv = c.num_attention_heads, c.num_key_value_heads
    out = [("token_embd.weight", model.model.embed_tokens.weight)]
    for i, layer in enumerate(model.model.layers):
        a, m = layer.self_attn, layer.mlp
        out += [(f"blk.{i}.attn_norm.weight", layer.input_layernorm.weight),
                (f"blk.{i}.attn_q.weight", permute_rope(a.q_proj.weight, heads)),
                (f"blk.{i}.attn_k.weight", permute_rope(a.k_proj.weight, kv)),
                (f"blk.{i}.attn_v.weight", a.v_proj.weight),
                (f"blk.{i}.attn_output.weight", a.o_proj.weight),
                (f"blk.{i}.ffn_norm.weight", layer.post_attention_layernorm.weight),
                (f"blk.{i}.ffn_gate.weight", m.gate_proj.weight),
                (f"blk.{i}.ffn_up.weight", m.up_proj.weight),
                (f"blk.{i}.ffn_down.weight", m.down_proj.weight)]
        if a.q_proj.bias is not None or m.gate_proj.bias is not None:
            raise CandidateError("biased attention/MLP projections are not written to GGUF yet (Llama has none)")
    out.append(("output_norm.weight", model.model.norm.weight))
    if model.lm_head.weight is not model.model.embed_tokens.weight:  # tied: llama.cpp reads token_embd
        out.append(("output.weight", model.lm_head.weight))
    return [(name, t.detach().float().contiguous()) for name, t in out]


def linears_of(model) -> list[tuple[str, torch.nn.Linear]]:
    """(GGUF tensor name, the Linear that computes with it): where an importance matrix is collected. A tied
    output head computes with the embedding table, and llama.cpp names its statistics after that table."""
    out = []
    for i, layer in enumerate(model.model.layers):
        a, m = layer.self_attn, layer.mlp
        out += [(f"blk.{i}.attn_q.weight", a.q_proj), (f"blk.{i}.attn_k.weight", a.k_proj),
                (f"blk.{i}.attn_v.weight", a.v_proj), (f"blk.{i}.attn_output.weight", a.o_proj),
                (f"blk.{i}.ffn_gate.weight", m.gate_proj), (f"blk.{i}.ffn_up.weight", m.up_proj),
                (f"blk.{i}.ffn_down.weight", m.down_proj)]
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    out.append(("token_embd.weight" if tied else "output.weight", model.lm_head))
    return out


def _copy_template(writer, template: Path) -> None:
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(template)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in _OWN_KEYS or key.startswith(f"{ARCH}."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub)


def write_f32(model, path: Path, template: Path) -> Path:
    """The model as an all-F32 GGUF at `path` (written beside it, then renamed: never half-written)."""
    from gguf import GGUFWriter, LlamaFileType

    c = model.config
    tensors = tensors_of(model)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    rope = getattr(c, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))
    if rope.get("rope_type", "default") != "default":
        raise CandidateError(f"rope_type {rope.get('rope_type')!r} is not written to GGUF yet")
    tmp = path.with_name(f".{path.name}.{_tag()}.tmp")  # per writer: workers may write the same file
    writer = GGUFWriter(str(tmp), ARCH)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(float(c.rms_norm_eps))
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(c.vocab_size)
    writer.add_file_type(LlamaFileType.ALL_F32)
    _copy_template(writer, template)
    for name, t in tensors:
        writer.add_tensor(name, t.numpy().astype(np.float32))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)  # never a half-written file left behind
        raise
    return path

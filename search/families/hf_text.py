"""What the Hugging Face text families share: loading a teacher directory, token ids + attention mask in,
`.logits` out, and the ONNX export spec built on those names. Each family (bert_cls, llama_lm) adds its own
architecture on top; only these modules name the model's inputs and outputs."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError
from .base import BATCH, SEQUENCE, ExportSpec, Forward, InputSpec, ModelShape

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "logits"


def load_pretrained(auto_class, model_dir: Path, file_for_errors: str, model_types: tuple, takes: str,
                    safetensors_only: bool, **kwargs):
    """`auto_class.from_pretrained(model_dir, **kwargs)` with every failure as one line on the task's `teacher`
    key: unreadable config, a model type the family does not take, no safetensors (unless allowed), bad weights."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise ConfigError(file_for_errors, "teacher", f"cannot read {model_dir}/config.json: {exc}") from None
    if config.model_type not in model_types:
        raise ConfigError(file_for_errors, "teacher", f"model_type {config.model_type!r}: {takes}")
    if safetensors_only and not any(Path(model_dir).glob("*.safetensors")):
        raise ConfigError(file_for_errors, "teacher", f"{model_dir} has no .safetensors weights; convert the "
                                                      "checkpoint, or set `teacher_weights: any` in the task "
                                                      "file to load pickled (.bin) weights")
    try:
        return auto_class.from_pretrained(model_dir, use_safetensors=True if safetensors_only else None,
                                          **kwargs).eval()
    except Exception as exc:  # transformers raises many kinds for corrupt weights; all are "unreadable"
        raise ConfigError(file_for_errors, "teacher", f"cannot load weights from {model_dir}: "
                                                      f"{str(exc).splitlines()[0]}") from None


class TextInputs:
    """Mixin: a tokenizer's ids and mask in, the model's logits out (and its hidden states/attentions)."""

    forward_kwargs: dict = {}  # extra keyword arguments of every forward call (e.g. no KV cache)
    output_axes: dict = {0: "batch"}  # the output's dynamic axes in the export

    def tokenize(self, tokenizer, texts: list[str], max_length: int) -> dict:
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        return {name: enc[name] for name in INPUTS}

    def encode(self, tokenizer, text: str) -> list[int]:
        """Token ids of a running text, no special tokens (a language model's held-out or calibration text)."""
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def sequence_features(self, ids: torch.Tensor) -> dict:
        """Features of unpadded token id rows [batch, tokens]."""
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def token_mask(self, features: dict) -> torch.Tensor:
        return features["attention_mask"].bool()

    def token_ids(self, features: dict) -> torch.Tensor:
        return features["input_ids"]

    def forward(self, model, features: dict, hidden_states: bool = False, attentions: bool = False) -> Forward:
        out = model(input_ids=features["input_ids"], attention_mask=features["attention_mask"],
                    output_hidden_states=hidden_states, output_attentions=attentions, **self.forward_kwargs)
        return Forward(out.logits, out.hidden_states if hidden_states else None,
                       out.attentions if attentions else None)

    def export_spec(self, shape: ModelShape) -> ExportSpec:
        ids = torch.ones(1, 8, dtype=torch.long)
        return ExportSpec(
            inputs=INPUTS, outputs=(OUTPUT,), example={"input_ids": ids, "attention_mask": torch.ones_like(ids)},
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                          OUTPUT: dict(self.output_axes)},
            optimizer_hints=self.optimizer_hints(shape),
            probe_inputs=(InputSpec("input_ids", (BATCH, SEQUENCE), "int64", "ids", high=shape.input_vocab),
                          InputSpec("attention_mask", (BATCH, SEQUENCE), "int64", "ones")))

    def optimizer_hints(self, shape: ModelShape) -> dict:
        return {}

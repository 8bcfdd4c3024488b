"""Vocabulary trimming: keep only the embedding rows of tokens the task's training text uses.

A small encoder (MiniLM) spends half its parameters on a 30522-row word embedding; a task uses a few thousand rows.
The trimmed model still takes the teacher tokenizer's ids: a lookup table maps each id to its kept
row, and ids never seen in training map to [UNK]'s row. The table ships inside the ONNX graph.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import families


class RemappedEmbedding(nn.Module):
    """nn.Embedding over the kept rows, addressed by original token ids through `id_map`."""

    def __init__(self, id_map: torch.Tensor, weight: torch.Tensor, padding_idx: int | None):
        super().__init__()
        self.register_buffer("id_map", id_map.long())
        self.embedding = nn.Embedding.from_pretrained(weight.clone(), freeze=False, padding_idx=padding_idx)

    @property
    def num_embeddings(self) -> int:
        return self.embedding.num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self.embedding.embedding_dim

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight

    def full_weight(self) -> torch.Tensor:
        """The equivalent untrimmed table (row i = row of id_map[i])."""
        return self.embedding.weight[self.id_map]

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.id_map[token_ids])


def task_token_ids(token_ids: torch.Tensor, special_ids: list[int]) -> torch.Tensor:
    """Sorted ids that occur in the (tokenized) training text, plus the special tokens."""
    return torch.unique(torch.cat([token_ids.flatten(), torch.tensor(special_ids, dtype=torch.long)]))


def trim(model, keep_ids: torch.Tensor, unk_id: int) -> None:
    """Replace the word embedding by its rows `keep_ids`; other ids fall back to [UNK]."""
    family = families.of(model)
    emb = family.word_embedding(model)
    if isinstance(emb, RemappedEmbedding):
        raise ValueError("vocabulary already trimmed")
    keep_ids = torch.unique(torch.cat([keep_ids, torch.tensor([unk_id])]))
    id_map = torch.full((emb.num_embeddings,), -1, dtype=torch.long)
    id_map[keep_ids] = torch.arange(len(keep_ids))
    id_map[id_map < 0] = id_map[unk_id]
    pad = None if emb.padding_idx is None else int(id_map[emb.padding_idx])
    family.set_word_embedding(model, RemappedEmbedding(id_map, emb.weight.data[keep_ids], pad))

"""A language-model recipe: cut the teacher (depth, FFN width, KV head groups), recover by distillation, and
quantize to GGUF with a GGML type per tensor class. The classification recipe is candidate.py."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LMRecipe:
    drop_layers: int = 0  # blocks removed, the least influential first (block influence, ShortGPT)
    ffn: int | None = None  # FFN channels kept per layer (None: all), the most important by activation x weight norm
    kv_groups: int | None = None  # KV head groups kept per layer (None: all), each with its query heads
    recovery_steps: int = 0  # KD steps on calibration text after the cuts (none when nothing was cut)
    types: tuple = ()  # ((tensor class, GGML type), ...), sorted; classes not named stay at the base type
    imatrix: bool = True  # quantize with an importance matrix from calibration text
    # the solver's budget: bits per weight over the typed classes; the solver picks `types` (flows/causal_lm/pipeline.py: resolve)
    bits_per_weight: float | None = None

    @classmethod
    def from_json(cls, d: dict) -> "LMRecipe":
        """A recipe as a trial stores it (`asdict`, through JSON: the types come back as lists)."""
        return cls(**{**d, "types": tuple(tuple(t) for t in d["types"])})

    def flat(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "types" and v is not None}
        out.update({f"type.{c}": t for c, t in self.types})
        return out

    def label(self) -> str:
        cut = f"-{self.drop_layers}L" if self.drop_layers else "full"
        cut += f" f{self.ffn}" if self.ffn else ""
        cut += f" g{self.kv_groups}" if self.kv_groups else ""
        cut += f" kd{self.recovery_steps}" if self.recovery_steps else ""
        short = {"embedding": "emb", "attn_qk": "qk", "attn_v": "v", "attn_output": "o", "ffn_up_gate": "up",
                 "ffn_down": "down", "output": "out"}
        types = ",".join(f"{short.get(c, c)}:{t}" for c, t in self.types)
        size = f" <={self.bits_per_weight:g}bpw" if self.bits_per_weight is not None else ""
        return f"{cut}{size} [{types}]" + (" imat" if self.imatrix else "")

    @property
    def cuts(self) -> bool:
        return bool(self.drop_layers or self.ffn or self.kv_groups)

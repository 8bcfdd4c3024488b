"""Task type `causal_lm`: a language model's quality is how closely its next-token distributions follow the
teacher's on held-out text, measured the way llama.cpp's `perplexity --kl-divergence` does.

What this task type knows: its objectives (mean KL divergence to the teacher, a ceiling; top-token agreement,
a floor; perplexity relative to the teacher, a ceiling), how held-out text is cut into fixed windows (the same
tokens for every trial), which positions of a window are scored, and how the per-token numbers are reduced
(means with their standard errors, the 99th percentile).

Why by hand: llama.cpp computes these in C++ inside its `llama-perplexity` tool, not as a library call, and
the search needs them from any runtime's outputs (torch for the teacher, llama.cpp for a GGUF)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..objectives import KLD_MEAN, PERPLEXITY_RATIO, SE_WINDOWS, TOP1_AGREEMENT, slice_key

NAME = "causal_lm"
OBJECTIVE = KLD_MEAN  # the default quality objective; a task's budget may name another of OBJECTIVES
OBJECTIVES = (KLD_MEAN, TOP1_AGREEMENT, PERPLEXITY_RATIO)


@dataclass(frozen=True)
class Windows:
    """Held-out text as `count` windows of `length` token ids; like llama-perplexity, only the second half of
    each window is scored, so every scored token sees at least length/2 tokens of context."""

    ids: np.ndarray  # (count, length) int64

    @property
    def length(self) -> int:
        return self.ids.shape[1]

    @property
    def first_scored(self) -> int:
        return self.length // 2

    @property
    def scored_tokens(self) -> int:
        """Positions scored per window: outputs at first_scored..length-2 predict the tokens after them."""
        return self.length - 1 - self.first_scored


def windows(token_ids: list[int] | np.ndarray, length: int, count: int, bos_id: int | None) -> Windows:
    """`count` consecutive, non-overlapping windows from the start of the text; each begins with BOS when the
    model has one (as llama-perplexity does), so each window is scored as a fresh sequence."""
    body = length - (1 if bos_id is not None else 0)
    ids = np.asarray(token_ids, dtype=np.int64)
    if len(ids) < body * count:
        raise ValueError(f"the text has {len(ids)} tokens; {count} windows of {length} need {body * count}")
    rows = ids[: body * count].reshape(count, body)
    if bos_id is not None:
        rows = np.concatenate([np.full((count, 1), bos_id, dtype=np.int64), rows], axis=1)
    return Windows(rows)


def log_probs(outputs: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Log-softmax in float64 over the vocabulary (KLs of a few 1e-4 need the precision)."""
    t = torch.as_tensor(outputs)
    return torch.log_softmax(t.to(torch.float64), dim=-1)


@dataclass
class TokenScores:
    """Per scored token: KL(teacher || model), whether the top tokens agree, and the model's NLL of the real
    next token (and the teacher's, for the perplexity ratio); `window`: the evaluation window each token is from."""

    kld: np.ndarray
    same_top: np.ndarray
    nll: np.ndarray
    teacher_nll: np.ndarray
    window: np.ndarray | None = None

    @staticmethod
    def concat(parts: list[TokenScores]) -> TokenScores:
        """One window's scores per part, in window order."""
        fields = (np.concatenate([getattr(p, f) for p in parts]) for f in ("kld", "same_top", "nll", "teacher_nll"))
        return TokenScores(*fields, window=np.concatenate([np.full(len(p.kld), i) for i, p in enumerate(parts)]))


def score_window(teacher_logp: torch.Tensor, outputs: np.ndarray | torch.Tensor, next_ids: np.ndarray) -> TokenScores:
    """Scores for one window's scored positions. `teacher_logp` (positions, vocab) are the teacher's
    log-probabilities, `outputs` the model's raw next-token scores at the same positions, `next_ids` the true next tokens."""
    lp = log_probs(outputs)
    tp = teacher_logp.to(torch.float64)
    kld = (tp.exp() * (tp - lp)).sum(-1).clamp_min(0.0)  # rounding can give -1e-17 for identical models
    idx = torch.as_tensor(next_ids, dtype=torch.long).unsqueeze(-1)
    return TokenScores(kld=kld.numpy(), same_top=(tp.argmax(-1) == lp.argmax(-1)).numpy(),
                       nll=-lp.gather(-1, idx).squeeze(-1).numpy(), teacher_nll=-tp.gather(-1, idx).squeeze(-1).numpy())


def _se(x: np.ndarray, window: np.ndarray | None) -> float:
    """Standard error of the mean of per-token `x`, across windows: tokens of one window are correlated (a hard
    passage is hard for many tokens in a row), so per-token errors are optimistic (0.0014 against 0.0033 across
    the 8 windows of the built-in run's KLD); windows are far apart in the text and scored as fresh sequences.
    Every window scores the same number of tokens, so the token mean is the mean of the window means."""
    if window is None:
        return float("nan")
    means = np.array([x[window == w].mean() for w in np.unique(window)])
    return float(np.std(means, ddof=1) / math.sqrt(len(means))) if len(means) > 1 else float("nan")


def summarize(s: TokenScores) -> dict:
    """The quality metrics of a model against the teacher, with standard errors across the evaluation windows
    (`se_windows` of them: confidence.py bounds with Student's t at that many less one degrees of freedom)."""
    ppl, teacher_ppl = math.exp(float(np.mean(s.nll))), math.exp(float(np.mean(s.teacher_nll)))
    diff = s.nll - s.teacher_nll  # paired: log(ppl ratio) = mean(diff)
    agree = s.same_top.astype(np.float64)
    w = s.window
    return {
        KLD_MEAN.name: float(np.mean(s.kld)), "kld_mean_se": _se(s.kld, w),
        "kld_p99": float(np.percentile(s.kld, 99)), "kld_median": float(np.median(s.kld)),
        TOP1_AGREEMENT.name: float(np.mean(agree)), "top1_agreement_se": _se(agree, w),
        "perplexity": ppl, "perplexity_se": ppl * _se(s.nll, w), "teacher_perplexity": teacher_ppl,
        PERPLEXITY_RATIO.name: math.exp(float(np.mean(diff))),
        "perplexity_ratio_se": math.exp(float(np.mean(diff))) * _se(diff, w), "scored_tokens": int(len(s.kld)),
        SE_WINDOWS: int(len(np.unique(w))) if w is not None else 0,
    }


def summarize_slices(s: TokenScores, window_slices) -> dict:
    """The metrics on each slice (`kld_mean@es`, its error across that slice's windows, ...): `window_slices` names
    the slice of each evaluation window, in window order."""
    out = {}
    names = np.asarray(window_slices)
    for name in dict.fromkeys(names.tolist()):
        rows = np.isin(s.window, np.flatnonzero(names == name))
        part = TokenScores(s.kld[rows], s.same_top[rows], s.nll[rows], s.teacher_nll[rows], s.window[rows])
        out.update({slice_key(k, name): v for k, v in summarize(part).items() if k in SLICED})
    return out


# the metrics reported per slice: each quality objective with its error, and the teacher's own perplexity there
SLICED = ("kld_mean", "kld_mean_se", "kld_p99", "top1_agreement", "top1_agreement_se", "perplexity_ratio",
          "perplexity_ratio_se", "teacher_perplexity", SE_WINDOWS)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(teacher || student) of the next-token distributions: the quality measure itself,
    as the recovery loss."""
    t = torch.log_softmax(teacher_logits.float(), -1)
    s = torch.log_softmax(student_logits.float(), -1)
    return torch.nn.functional.kl_div(s.flatten(0, -2), t.flatten(0, -2), log_target=True, reduction="batchmean")


def teacher_logp(reference_path, window: int) -> torch.Tensor:
    """The teacher's log-probabilities at one window's scored positions (flows/causal_lm/task.py writes them)."""
    from safetensors import safe_open

    with safe_open(str(reference_path), framework="pt") as f:
        return f.get_tensor(f"w{window}")

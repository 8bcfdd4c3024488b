"""Confidence bounds: a candidate ships only when the bound of each budgeted figure, not just its point estimate,
is within the budget (one-sided, at the target's `budget.confidence`, 0.95 unless it says otherwise).

- Accuracy against a floor *relative to the teacher* (`max_drop`): paired on the same validation examples. Only
  the examples where the student and the teacher disagree say anything about their difference; given their number
  m, the student's wins among them are Binomial(m, pi), and an exact (Clopper-Pearson) lower bound on pi bounds
  the accuracy difference from below: (2 pi_low - 1) m / n (the McNemar construction, conditional on m).
- Accuracy against an *absolute* floor: exact Clopper-Pearson lower bound on the accuracy (k of n correct).
- A language model's KLD / top-1 agreement / perplexity ratio: mean -/+ z * the standard error measured over the
  evaluation windows (normal approximation: hundreds of windows).
- Measured latency: a one-sided percentile bootstrap of the p99 over the measured runs (or decode steps).
- Estimated latency: the estimate x (1 + the estimator's relative error): the calibration's out-of-sample error
  when the target is calibrated, else the error the target states, else an assumed one (said so).
- Memory has no bound: spec-only devices count exact bytes plus an analytic activation peak; measured devices
  one peak resident size, which is not a sampled quantity.

scipy does the exact binomial interval and the bootstrap: the field's well-kept implementations."""
from __future__ import annotations

import numpy as np

from .objectives import Objective, constraints, for_budget

DEFAULT_CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def _binomial_lower(k: int, n: int, confidence: float) -> float:
    from scipy.stats import binomtest

    if n == 0:
        return 0.0
    return float(binomtest(k, n, alternative="greater").proportion_ci(confidence, method="exact").low)


def paired_difference_lower(student_correct: np.ndarray, teacher_correct: np.ndarray,
                            confidence: float) -> float:
    """Lower bound on accuracy(student) - accuracy(teacher) from per-example correctness on the same examples."""
    s, t = np.asarray(student_correct, bool), np.asarray(teacher_correct, bool)
    n = len(s)
    wins, losses = int(np.sum(s & ~t)), int(np.sum(~s & t))
    m = wins + losses
    if m == 0:  # they agree on every example: no evidence of any difference
        return 0.0
    return (2 * _binomial_lower(wins, m, confidence) - 1) * m / n


def accuracy_lower(predictions: np.ndarray, labels: np.ndarray, confidence: float,
                   teacher_predictions: np.ndarray | None = None, teacher_accuracy: float | None = None) -> tuple:
    """(lower bound on accuracy, method). With the teacher's predictions: the teacher's measured accuracy plus
    the paired bound on the difference (what a floor relative to the teacher needs); else absolute."""
    correct = np.asarray(predictions) == np.asarray(labels)
    if teacher_predictions is not None:
        diff = paired_difference_lower(correct, np.asarray(teacher_predictions) == np.asarray(labels), confidence)
        return teacher_accuracy + diff, (f"paired with the teacher on the same {len(correct)} examples: exact "
                                         f"binomial bound on the examples where they disagree, {confidence:.0%} "
                                         "one-sided")
    return (_binomial_lower(int(correct.sum()), len(correct), confidence),
            f"exact binomial (Clopper-Pearson) on {int(correct.sum())}/{len(correct)} correct, "
            f"{confidence:.0%} one-sided")


def normal_z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(confidence))


def p99_upper(times_ms, confidence: float, seed: int = 0) -> float:
    """One-sided percentile-bootstrap upper bound on the p99 of the measured runs."""
    from scipy.stats import bootstrap

    x = np.asarray(times_ms, float)
    if len(x) < 2:
        return float(x.max()) if len(x) else float("nan")
    res = bootstrap((x,), lambda a, axis: np.percentile(a, 99, axis=axis), confidence_level=confidence,
                    n_resamples=BOOTSTRAP_RESAMPLES, method="percentile", alternative="less",
                    rng=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.high)


def measured_latency_bound(times_ms, confidence: float) -> tuple[float, str]:
    # With n runs this bound cannot pass the slowest one: a distribution-free 95% bound on a p99 needs more than
    # 300 runs (1 - 0.99^n >= 0.95), so the search's 200-run figure is weaker evidence than select's re-measure.
    return (p99_upper(times_ms, confidence),
            f"bootstrap of the p99 over {len(times_ms)} measured runs, {confidence:.0%} one-sided")


def estimated_latency_bound(p99_ms: float, error_pct: float, error_source: str) -> tuple[float, str]:
    return p99_ms * (1 + error_pct / 100), f"estimate x {1 + error_pct / 100:.2f} ({error_source})"


def latency_bound(p99_ms: float, times_ms, source: str, device, confidence: float) -> tuple[float | None, str]:
    """Upper bound of a p99 (one inference, or one decode step) as measured or estimated on `device`."""
    if source == "estimated":
        return estimated_latency_bound(p99_ms, device.latency_error_pct, device.latency_error_source)
    if len(times_ms) == 0:
        return None, "the probe returned no per-run times"
    return measured_latency_bound(times_ms, confidence)


def _quality_bound(o: Objective, m: dict, teacher: dict, budget: dict, evidence: dict | None,
                   confidence: float) -> tuple[float | None, str]:
    if o.name == "accuracy":
        if not evidence:
            return None, "no per-example predictions stored for this trial (a run made before bounds existed)"
        relative = budget.get("accuracy_floor_rule", "").startswith("teacher")
        return accuracy_lower(evidence["predictions"], evidence["labels"], confidence,
                              evidence.get("teacher_predictions") if relative else None, teacher.get("accuracy"))
    se = {"kld_mean": "kld_mean_se", "top1_agreement": "top1_agreement_se",
          "perplexity_ratio": "perplexity_ratio_se"}.get(o.name)
    if se is None or m.get(se) is None:
        return None, f"no standard error of {o.name} stored"
    z = normal_z(confidence)
    return m[o.name] - o.sign * z * m[se], f"mean {'-' if o.sign > 0 else '+'} {z:.2f} SE over the evaluation windows"


def bounds(metrics: dict, teacher: dict, budget: dict, evidence: dict | None = None) -> dict:
    """{objective name: {"bound", "method", "meets"}} for the quality objective and the latency objective; a
    bound that cannot be computed is None and does not meet its budget (nothing unvouched ships)."""
    confidence = budget.get("confidence", DEFAULT_CONFIDENCE)
    quality, latency, _ = for_budget(budget)
    out = {}
    value, method = _quality_bound(quality, metrics, teacher, budget, evidence, confidence)
    out[quality.name] = {"bound": value, "method": method}
    upper = metrics.get(f"{latency.name}_upper")
    out[latency.name] = {"bound": upper, "method": metrics.get("latency_bound_method")
                         or "no bound stored for this trial (a run made before bounds existed)"}
    for name, b in out.items():
        o = next(o for o in constraints(budget) if o.name == name)
        b["meets"] = b["bound"] is not None and o.violation(b["bound"], budget[o.budget_key]) <= 0
    return out


def problems(bound: dict, budget: dict) -> list[str]:
    """Why a candidate cannot be vouched for (empty: it can)."""
    out = []
    for o in constraints(budget):
        b = bound.get(o.name)
        if b is None or b["meets"]:
            continue
        kind = "lower" if o.sign > 0 else "upper"
        if b["bound"] is None:
            out.append(f"{o.name}: no {kind} bound ({b['method']})")
        else:
            limit = budget[o.budget_key]
            out.append(f"{o.name} {kind} bound {b['bound']:.4g} {'<' if o.sign > 0 else '>'} "
                       f"{'floor' if o.sign > 0 else 'budget'} {limit:.4g} ({b['method']})")
    return out

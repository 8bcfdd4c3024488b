"""Confidence bounds: a candidate ships only when the bound of each budgeted figure, not just its point estimate,
is within the budget (one-sided, at the target's `budget.confidence`, 0.95 unless it says otherwise).

- Accuracy against a floor *relative to the teacher* (`max_drop`): paired on the same validation examples. Only
  the examples where the student and the teacher disagree say anything about their difference; given their number
  m, the student's wins among them are Binomial(m, pi), and an exact (Clopper-Pearson) lower bound on pi bounds
  the accuracy difference from below: (2 pi_low - 1) m / n (the McNemar construction, conditional on m).
- Accuracy against an *absolute* floor: exact Clopper-Pearson lower bound on the accuracy (k of n correct).
- A language model's KLD / top-1 agreement / perplexity ratio: mean -/+ z * the standard error measured over the
  evaluation windows (normal approximation: hundreds of windows).
- Measured latency: a distribution-free order-statistic bound on the p99 of the measured runs (or decode steps):
  it needs at least 299 runs at 95%, so the search's 200-run measurements are bounded when select re-measures.
- Estimated latency: the estimate x (1 + how much slower than the estimate the device may be): the error the
  target states, else the calibration's out-of-sample 95th percentile, else an assumed one (said so). An error
  model, not a sampled confidence level.
- Memory has no bound: spec-only devices count exact bytes plus an analytic activation peak; measured devices
  one peak resident size, which is not a sampled quantity.

scipy gives the beta and binomial quantiles: the field's well-kept implementations.

A bound is per candidate, on the validation set the search also chose by; requiring two bounds at once holds
jointly at about 1 - 2 x (1 - confidence). docs/targets.md says so."""
from __future__ import annotations

import numpy as np

from .objectives import SE_WINDOWS, Objective, for_budget, limits, slice_key, slice_limits

DEFAULT_CONFIDENCE = 0.95


def _binomial_lower(k: int, n: int, confidence: float) -> float:
    """Exact one-sided (Clopper-Pearson) lower bound on a proportion, k of n."""
    from scipy.stats import beta

    return 0.0 if k == 0 or n == 0 else float(beta.ppf(1 - confidence, k, n - k + 1))


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    p = k / n
    centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def paired_difference_lower(student_correct: np.ndarray, teacher_correct: np.ndarray,
                            confidence: float) -> float:
    """Lower bound on accuracy(student) - accuracy(teacher) from per-example correctness on the same examples:
    Newcombe's hybrid score interval for paired proportions (Newcombe 1998, method 10), one-sided. It combines the
    two accuracies' Wilson bounds with the correlation of the pairs, so a student that mostly errs where the
    teacher does pays only for its disagreements; it does not condition on their number (the McNemar construction
    gave no margin when the student only loses: 11-51% misses simulated at a 95% level) and is not as loose as a
    Bonferroni of two exact bounds (which refused every candidate of the demo). Coverage near nominal: tested by
    Monte Carlo. No well-kept library here has it (statsmodels is not a dependency); it is a closed formula."""
    s, t = np.asarray(student_correct, bool), np.asarray(teacher_correct, bool)
    n = len(s)
    both, wins, losses = int(np.sum(s & t)), int(np.sum(s & ~t)), int(np.sum(~s & t))
    neither = n - both - wins - losses
    z = normal_z(confidence)
    p1, p2 = (both + wins) / n, (both + losses) / n
    l1, _ = _wilson(both + wins, n, z)
    _, u2 = _wilson(both + losses, n, z)
    margins = (both + wins) * (losses + neither) * (both + losses) * (wins + neither)
    phi = (both * neither - wins * losses) / np.sqrt(margins) if margins > 0 else 0.0
    spread = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    return float(p1 - p2 - np.sqrt(max(spread, 0.0)))


def accuracy_lower(predictions: np.ndarray, labels: np.ndarray, confidence: float,
                   teacher_predictions: np.ndarray | None = None, teacher_accuracy: float | None = None) -> tuple:
    """(lower bound on accuracy, method). With the teacher's predictions: the teacher's measured accuracy plus
    the paired bound on the difference (what a floor relative to the teacher needs); else absolute."""
    correct = np.asarray(predictions) == np.asarray(labels)
    if teacher_predictions is not None:
        diff = paired_difference_lower(correct, np.asarray(teacher_predictions) == np.asarray(labels), confidence)
        return teacher_accuracy + diff, (f"paired with the teacher on the same {len(correct)} examples "
                                         f"(Newcombe's score interval for paired proportions), {confidence:.0%} "
                                         "one-sided")
    return (_binomial_lower(int(correct.sum()), len(correct), confidence),
            f"exact binomial (Clopper-Pearson) on {int(correct.sum())}/{len(correct)} correct, "
            f"{confidence:.0%} one-sided")


def normal_z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(confidence))


def p99_upper(times_ms, confidence: float) -> float | None:
    """Distribution-free upper bound on the p99 of the measured runs: the k-th smallest run, for the smallest k
    with P(Binomial(n, 0.99) <= k - 1) >= confidence (the runs taken as independent draws). None when n runs
    cannot bound a p99 at this level (fewer than 299 at 95%: even the slowest run is not enough). Not a bootstrap:
    a percentile bootstrap cannot exceed the slowest run and under-covers a p99 (87% measured at 500 runs)."""
    from scipy.stats import binom

    x = np.sort(np.asarray(times_ms, float))
    n = len(x)
    if n == 0:
        return None
    k = int(binom.ppf(confidence, n, 0.99)) + 1  # smallest k with cdf(k - 1) >= confidence
    return float(x[k - 1]) if k <= n else None


def runs_needed(confidence: float) -> int:
    """The fewest runs that can bound a p99 at this level (the slowest run, k = n)."""
    import math

    return math.ceil(math.log(1 - confidence) / math.log(0.99))


def measured_latency_bound(times_ms, confidence: float) -> tuple[float | None, str]:
    upper = p99_upper(times_ms, confidence)
    if upper is None:
        return None, (f"{len(times_ms)} measured runs cannot bound a p99 at {confidence:.0%} (needs "
                      f"{runs_needed(confidence)}); bounded when re-measured before shipping")
    return upper, (f"order statistic of {len(times_ms)} measured runs (distribution-free), {confidence:.0%} "
                   "one-sided")


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
                   confidence: float, slice_name: str | None = None) -> tuple[float | None, str]:
    """The bound of the quality objective over the whole evaluation set, or over one slice of it."""
    key = o.name if slice_name is None else slice_key(o.name, slice_name)
    if o.name == "accuracy":
        if not evidence:
            return None, "no per-example predictions stored for this trial (a run made before bounds existed)"
        if len(evidence["predictions"]) != len(evidence["labels"]):
            return None, (f"{len(evidence['predictions'])} stored predictions for {len(evidence['labels'])} labels: "
                          "the trial's predictions.npy does not belong to this run")
        relative = budget.get("accuracy_floor_rule", "").startswith("teacher")
        paired = evidence.get("teacher_predictions") if relative else None
        predictions, labels = evidence["predictions"], evidence["labels"]
        if slice_name is not None:
            if evidence.get("slices") is None or len(evidence["slices"]) != len(labels):
                return None, "no slice of each validation example stored for this run"
            rows = np.asarray(evidence["slices"]) == slice_name
            predictions, labels = predictions[rows], labels[rows]
            paired = None if paired is None else paired[rows]
        value, method = accuracy_lower(predictions, labels, confidence, paired, teacher.get(key))
        if relative and paired is None:
            method += " (the teacher's predictions are not stored: not paired)"
        return value, method
    se = o.se if slice_name is None or not o.se else slice_key(o.se, slice_name)
    if not se or m.get(se) is None:
        return None, f"no standard error of {key} stored"
    windows = m.get(slice_key(SE_WINDOWS, slice_name) if slice_name else SE_WINDOWS)
    sign = "-" if o.sign > 0 else "+"
    if windows and windows > 1:  # few windows: Student's t, not the normal quantile
        from scipy.stats import t

        q = float(t.ppf(confidence, windows - 1))
        return m[key] - o.sign * q * m[se], (f"mean {sign} {q:.2f} SE across {windows} evaluation windows "
                                             f"(Student's t, {windows - 1} df), {confidence:.0%} one-sided")
    z = normal_z(confidence)  # a run made before errors were taken across windows: per-token, optimistic
    return m[key] - o.sign * z * m[se], (f"mean {sign} {z:.2f} SE over the evaluation tokens (per-token errors: "
                                         f"optimistic), {confidence:.0%} one-sided")


def bounds(metrics: dict, teacher: dict, budget: dict, evidence: dict | None = None) -> dict:
    """{name: {"bound", "method", "meets"}} for the quality objective, its value on each slice the task names
    (`accuracy@tweets`) and the latency objective; a bound that cannot be computed is None and does not meet its
    budget (nothing unvouched ships)."""
    confidence = budget.get("confidence", DEFAULT_CONFIDENCE)
    quality, latency, _ = for_budget(budget)
    out = {}
    value, method = _quality_bound(quality, metrics, teacher, budget, evidence, confidence)
    out[quality.name] = {"bound": value, "method": method}
    for s in slice_limits(budget):
        value, method = _quality_bound(quality, metrics, teacher, budget, evidence, confidence, s.slice)
        out[s.key] = {"bound": value, "method": method}
    upper = metrics.get(f"{latency.name}_upper")
    out[latency.name] = {"bound": upper, "method": metrics.get("latency_bound_method")
                         or "no bound stored for this trial (a run made before bounds existed)"}
    limit_of = {name: (o, limit) for name, o, limit in limits(budget)}
    for name, b in out.items():
        o, limit = limit_of[name]
        b["meets"] = b["bound"] is not None and o.violation(b["bound"], limit) <= 0
    return out


def problems(bound: dict, budget: dict) -> list[str]:
    """Why a candidate cannot be vouched for (empty: it can)."""
    out = []
    for name, o, limit in limits(budget):
        b = bound.get(name)
        if b is None or b["meets"]:
            continue
        kind = "lower" if o.sign > 0 else "upper"
        if b["bound"] is None:
            out.append(f"{name}: no {kind} bound ({b['method']})")
        else:
            out.append(f"{name} {kind} bound {b['bound']:.4g} {'<' if o.sign > 0 else '>'} "
                       f"{'floor' if o.sign > 0 else 'budget'} {limit:.4g} ({b['method']})")
    return out

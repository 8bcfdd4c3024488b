"""One candidate, start to finish: screen it, distill -> prune -> quantize, then measure the artifact.

Knows no model family and no runtime: it asks the family (shapes, cuts, forward), the backend (what the
runtime can run, bytes, the artifact, sessions) and the task type (losses, evaluation)."""
from __future__ import annotations

import itertools
import time
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from ... import allocation, confidence
from ...backends.base import Backend
from ...candidate import Candidate, DistillParams, PruneParams, QuantParams
from ...errors import ConfigError
from ...exploit import student_params
from ..base import Start
from ...compress import distill, prune, qat, vocab
from ...families.base import Family, Importance, Limits, ModelShape
from ...locks import latency_lease
from ...measure import memory, roofline
from ...measure.latency import Latency
from ...run_dir import PREDICTIONS, atomic_write_npy
from ...space import Space, check_against_teacher, values
from ...strategies import STARTUP_TRIALS
from ...target import Target
from ...tasks.teacher import HOLDOUT_MIN, Prepared
from ...train import KD

CALIBRATION_EXAMPLES = 128


@dataclass
class Context:
    """Everything a trial needs that is the same for every trial of a run."""

    prepared: Prepared
    target: Target
    cache_dir: Path
    importance: Importance  # of the teacher, ranks what students keep
    calibration: dict  # a feature batch from the training split
    threads: int
    seed: int = 0
    vocab_ids: torch.Tensor | None = None  # token ids of the training text (+ specials), for vocab="task"
    unk_id: int = 0
    calibration_labels: torch.Tensor | None = None  # labels of the calibration examples (gradient importance)
    backend: Backend | None = None
    space: Space | None = None  # a run's (its warm start draws from it); benches build contexts without one

    @property
    def family(self) -> Family:
        return self.prepared.family

    @property
    def task_type(self):
        return self.prepared.task_type

    @property
    def limits(self) -> Limits:
        return self.family.limits(self.family.shape_of(self.prepared.teacher))


def make_context(prepared: Prepared, target: Target, cache_dir: Path, threads: int, seed: int = 0) -> Context:
    from ... import backends

    features, labels = prepared.train.batch(torch.arange(min(CALIBRATION_EXAMPLES, len(prepared.train))))
    importance = prepared.family.measure_importance(prepared.teacher, features)
    tok = prepared.tokenizer
    unk = tok.unk_token_id if tok.unk_token_id is not None else 0
    mask = prepared.family.token_mask(prepared.kd_train.features)
    token_ids = prepared.family.token_ids(prepared.kd_train.features)[mask]
    vocab_ids = vocab.task_token_ids(token_ids, list(tok.all_special_ids) + [unk])
    return Context(prepared, target, cache_dir, importance, features, threads, seed, vocab_ids, unk, labels,
                   backends.get(target.device.runtime))


def smallest_candidates(space: Space, limits: Limits) -> list[Candidate]:
    """The cheapest recipes the space allows, one per quantization option: if none fits, nothing will."""
    k = space.knobs
    low = lambda name: min(values(k[name]))  # noqa: E731
    distill = DistillParams(layers=low("distill.layers"), hidden=low("distill.hidden"),
                            heads=limits.heads_for(low("distill.heads"), low("distill.hidden")),
                            ffn=low("distill.ffn"),
                            vocab="task" if "task" in values(k["distill.vocab"]) else "full")
    prune = (PruneParams("structured", max(values(k["prune.ratio"])))
             if "structured" in values(k["prune.type"]) else PruneParams())
    quants = []
    for bits, act, group in itertools.product(values(k["quant.bits"]), values(k["quant.activations"]),
                                              values(k["quant.group_size"])):
        quants.append(QuantParams(bits=bits, activations=act if bits == 8 else "none",
                                  group_size=group if bits < 32 and (bits != 8 or act == "none") else None))
    return [Candidate(distill, prune, q) for q in set(quants)]


def check_feasible_at_all(ctx: Context, space) -> None:
    """Reject an impossible budget before any training, naming the budget and what it would take."""
    best = {}
    limits = ctx.family.limits(ctx.family.shape_of(ctx.prepared.teacher))
    for cand in smallest_candidates(space, limits):
        predicted, _ = screen(ctx, cand)
        for key, value in predicted.items():
            best[key] = min(best.get(key, value), value)
    budget, path = ctx.target.budget, ctx.target.path
    if best["predicted_memory_mb"] > budget.memory_mb:
        raise ConfigError(path, "budget.memory_mb", f"{budget.memory_mb} MB, but the smallest recipe in "
                                                    f"{space.path} needs {best['predicted_memory_mb']:.1f} MB; "
                                                    "raise the budget or widen the space")
    if best.get("predicted_p99_latency_ms_upper", 0) > budget.p99_latency_ms:  # nothing could ship (its bound)
        raise ConfigError(path, "budget.p99_latency_ms",
                          f"{budget.p99_latency_ms} ms, but the fastest recipe in {space.path} is estimated at "
                          f"{best['predicted_p99_latency_ms']:.2f} ms, bound {best['predicted_p99_latency_ms_upper']:.2f} "
                          "ms; raise the budget or widen the space")


def prepare_run(prepared: Prepared, target: Target, space, cache_dir: Path, threads: int, seed: int,
                log=print) -> Context:
    """What every trial of a run shares, after checking the space against the teacher and refusing a budget no
    recipe of the space can meet."""
    if type(space) is not Space:
        raise ConfigError(space.path, "-", "not a classification space; use --space default or a space with "
                                           "distill/prune/quant sections")
    check_against_teacher(space, prepared.family.limits(prepared.family.shape_of(prepared.teacher)))
    if space.promote.on:  # a second rung early-stops on held-out training rows: no student trains on them
        prepared = prepared.with_holdout()
        if prepared.holdout is not None:
            log(f"second rung on: {len(prepared.holdout)} training examples held out for early stopping")
        else:
            log(f"second rung off: {len(prepared.train)} training examples are too few to hold out "
                f"{HOLDOUT_MIN} for early stopping ({space.path}: promote is not used)")
    ctx = replace(make_context(prepared, target, cache_dir, threads, seed), space=space)
    check_feasible_at_all(ctx, space)
    return ctx


def resolve(ctx: Context, cand: Candidate) -> Candidate:
    """The recipe as it builds: knob values that build the same model are written one way, so that two trials are
    one recipe exactly when they build one model (the study de-duplicates by the resolved recipe). A weight-only
    high-precision fraction keeps round(fraction x layers) layers at 8 bits: 0.25 of 2 layers keeps none (with the
    per-layer solver it is a share of bytes: no rounding)."""
    q = cand.quant
    if q.high_precision_fraction and q.precision == "uniform":
        kept_high = round(q.high_precision_fraction * cand.distill.layers)
        cand = replace(cand, quant=replace(q, high_precision_fraction=kept_high / cand.distill.layers))
    return cand


def as_built(recipe: dict | None) -> dict | None:
    """A stored recipe in today's terms: knobs added since it was stored take their defaults ("off"), so a run
    resumed after an upgrade still recognises its own trials' recipes."""
    if recipe is None:
        return recipe
    kinds = {"distill": DistillParams, "prune": PruneParams, "quant": QuantParams}
    defaults = {section: {f.name: f.default for f in fields(kind) if f.default is not MISSING}
                for section, kind in kinds.items()}
    return {section: {**defaults.get(section, {}), **values} for section, values in recipe.items()}


def solved_for_target(recipe: dict) -> bool:
    """A per-layer precision solved for the run's target and budget (allocation.py)."""
    return recipe["quant"].get("precision") == "solver"


STARTUP_DRAWS = 400  # random recipes drawn at most to find them: screening costs microseconds, training minutes


def warm_start(ctx: Context, trials: int) -> list[Start]:
    """The study's random start-up, drawn from the feasible region only: random recipes of the space (the same
    random sampler and seed the study's TPE would start with) screened by shape before any training, the first
    distinct ones the budget admits kept; where the budget screens any draw out, the largest admitted student of
    all STARTUP_DRAWS draws comes first (in place of the last random one) or, with exploitation on (exploit.py),
    two brackets of the admitted students' memory range, each compressed the least the budget admits (`gentlest`)
    so that their cheap variants walk its compression down: that student's compact form (`compact_form`: a task
    vocabulary; as capable, far less memory: the largest student itself is then left out), and the compact form at
    the space's least width (`narrowest_form`; the other knobs kept) distilled for the space's most epochs
    (`longest_form`): the front's low-memory end. A screened-out start-up trial teaches the sampler little, and each
    one would cost an ask; without a budget that rejects anything these are exactly the recipes TPE's own start-up
    would have drawn. Each start's attrs say which it is (`largest_admitted`, `compact_admitted`,
    `narrow_admitted`: rungs.py promotes them, exploit.py gives their students more variants)."""
    if ctx.space is None:
        return []
    want = min(STARTUP_TRIALS, trials)
    starts, screened_out = [], 0
    largest, largest_size = None, 0
    for params, cand in _distinct_draws(ctx, ctx.seed, STARTUP_DRAWS, skip=set()):
        _, reasons = screen(ctx, cand)
        if reasons:
            screened_out += 1
            continue
        if len(starts) < want:
            starts.append(params)
        size = student_size(ctx, cand)
        if size > largest_size:
            largest, largest_size = params, size
    marked = {}  # "largest_admitted" / "compact_admitted" / "narrow_admitted" -> the start that is it
    if screened_out and largest is not None:
        # the budget cuts the space: its largest admitted student first (the closest to the teacher, the likeliest
        # to reach the floor: rungs.py gives it the longer training) or the brackets, then the random ones
        brackets = [largest]
        if ctx.space.exploit.on:  # the two ends instead (each None where the screen admits no recipe of it)
            form = compact_form(ctx.space, largest)
            narrow_form = longest_form(ctx.space, narrowest_form(ctx.space, form))
            compact, narrow = gentlest(ctx, form), gentlest(ctx, narrow_form)
            compact = None if compact == largest else compact
            narrow = None if narrow in (compact, largest) else narrow
            ends = [p for p in (compact, narrow) if p is not None]
            if compact is not None:
                # not the largest student itself: its compact form has its FLOPs for less memory (on the default
                # task the full-vocabulary student never joined the front)
                brackets = ends[:want]
            else:
                brackets = ends[:want - 1] + brackets
            marked.update(compact_admitted=compact if compact in brackets else None,
                          narrow_admitted=narrow if narrow in brackets else None)
        marked["largest_admitted"] = largest if largest in brackets else None  # rungs.py promotes it
        starts = brackets + [p for p in starts if p not in brackets and p != largest][:want - len(brackets)]
    return [Start(p, {"warm_start": True, "largest_admitted": p == marked.get("largest_admitted"),
                      **{mark: True for mark in ("compact_admitted", "narrow_admitted") if p == marked.get(mark)}})
            for p in starts]


def compact_form(space: Space, params: dict) -> dict:
    """`params` with a task vocabulary where the space has one: the same student's FLOPs at the least memory (the
    word embedding is half of MiniLM's parameters), so the budget admits it compressed the least."""
    if params.get("distill.vocab") == "full" and "task" in values(space.knobs["distill.vocab"]):
        return {**params, "distill.vocab": "task"}
    return dict(params)


def longest_form(space: Space, params: dict) -> dict:
    """`params` distilled for the space's most epochs: the narrow bracket's student is trained once and its
    variants all reuse it (exploit.py), and where its accuracy is a few examples above the floor each counts. Not
    the compact bracket: it is there to reach the floor soon (rungs.py promotes it where it misses), and a deep
    student's extra epoch can take a large part of a short run. Measured: docs/search.md, variants."""
    if "distill.epochs" in params and "distill.epochs" in space.knobs:
        return {**params, "distill.epochs": max(values(space.knobs["distill.epochs"]))}
    return dict(params)


def narrowest_form(space: Space, params: dict) -> dict:
    """`params` at the space's least width, its other knobs kept (heads are capped at the width by the family): a
    student at the small end of the admitted memory range that keeps the depth, FFN and heads the budget admits
    (a student at every knob's least stays at the majority class on the default task)."""
    if "distill.hidden" in params and "distill.hidden" in space.knobs:
        return {**params, "distill.hidden": min(values(space.knobs["distill.hidden"]))}
    return dict(params)


def gentleness(cand: Candidate) -> tuple:
    """How little a recipe compresses its student (larger: less): the least pruned, then the most weight bits,
    weights-only, the most layers at 8 bits; of equals, the fewest `training_steps` (the cheapest to build)."""
    p, q = cand.prune, cand.quant
    removed = 0.0 if p.type == "none" else 0.5 if p.type == "2:4" else p.ratio
    return -removed, q.bits, q.activations == "none", q.high_precision_fraction, -training_steps(cand)


def training_steps(cand: Candidate) -> int:
    """The KD steps a recipe trains after distillation (pruning recovery, QAT): what a variant of a cached student
    costs beyond quantizing and measuring."""
    return (cand.prune.recovery_steps if cand.prune.type != "none" else 0) + cand.quant.qat_steps


def gentlest(ctx: Context, params: dict) -> dict | None:
    """Of the recipes that keep `params`'s distillation and pass the screen (params itself and VARIANT_DRAWS random
    draws), the one compressed the least (`gentleness`, which ends with the fewest training steps; the first drawn
    of equals): the student's likeliest recipe to reach the floor; its variants (cheaper first) then walk its
    compression down (exploit.py). None when the screen admits none of them."""
    import optuna

    best, best_params = None, None
    own = resolve(ctx, ctx.space.suggest(optuna.trial.FixedTrial(params), ctx.limits))
    draws = _distinct_draws(ctx, ctx.seed, VARIANT_DRAWS, skip=set(), fixed=student_params(params))
    for draw, cand in itertools.chain(draws, [(params, own)]):  # ties: the first drawn (whichever recipe `params` is)
        if (best is None or gentleness(cand) > gentleness(best)) and not screen(ctx, cand)[1]:
            best, best_params = cand, draw
    return best_params


VARIANT_DRAWS = 200  # random pruning/quantization draws for one student's variants (exploit.py): microseconds each


def variants(ctx: Context, parent_params: dict, taken: set, n: int, seed: int) -> list[dict]:
    """Up to n recipes that keep the parent trial's distillation (its student is cached: each costs pruning,
    quantization and one measurement, no distillation) with pruning and quantization drawn at random (seeded), each
    screened within the budget and none in `taken` (the resolved recipes the run has built, is building or has
    queued); those predicted to spend less memory or latency than the parent come first, the one nearest halfway
    from its predicted memory to the least drawn first of all (exploit.py)."""
    import optuna

    fixed = student_params(parent_params)
    parent = resolve(ctx, ctx.space.suggest(optuna.trial.FixedTrial(parent_params), ctx.limits))
    base, _ = screen(ctx, parent)
    cheaper, other = [], []  # (params, recipe, predicted memory)
    for params, cand in _distinct_draws(ctx, seed, VARIANT_DRAWS, skip=set(taken) | {parent}, fixed=fixed):
        predicted, reasons = screen(ctx, cand)
        if reasons:
            continue
        less = any(predicted[k] < base[k] for k in ("predicted_memory_mb", "predicted_p99_latency_ms") if k in base)
        (cheaper if less else other).append((params, cand, predicted["predicted_memory_mb"]))
    if cheaper:  # one step down first: the cheaper recipe nearest (log scale) halfway from the parent's memory to
        # the least any draw predicts (bisecting the student's memory range walks its front down in few trials; the
        # cheapest cut is the likeliest to fall below the floor), of equals the least compressed (2:4 or unstructured
        # sparsity is stored dense: it saves no memory here), then the fewest training steps; the others as drawn
        least = min(memory for *_, memory in cheaper)
        halfway = np.sqrt(base["predicted_memory_mb"] * least)
        step = min(range(len(cheaper)), key=lambda i: (round(abs(np.log(cheaper[i][2] / halfway)), 3),
                                                       [-x for x in gentleness(cheaper[i][1])]))
        cheaper.insert(0, cheaper.pop(step))
    return [params for params, *_ in (cheaper + other)[:n]]


def _distinct_draws(ctx: Context, seed: int, draws: int, skip: set, fixed: dict | None = None):
    """(params, resolved recipe) of `draws` random draws from the run's space (Optuna's random sampler, seeded; the
    `fixed` params held), each recipe once and none in `skip`, in draw order (lazily: a caller may stop early)."""
    import optuna

    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed),
                                  directions=["maximize"])  # in memory: only its draws matter
    seen = set(skip)
    for _ in range(draws):
        if fixed:
            scratch.enqueue_trial(fixed)
        trial = scratch.ask()
        cand = resolve(ctx, ctx.space.suggest(trial, ctx.limits))
        scratch.tell(trial, 0.0)
        if cand not in seen:
            seen.add(cand)
            yield dict(trial.params), cand


def student_size(ctx: Context, cand: Candidate) -> float:
    """A recipe's student size: the FLOPs of one inference at the workload, from the planned shape alone (the
    encoder's capacity: embedding rows cost no FLOPs, so a full vocabulary does not make a 1-layer student large)."""
    shape = recipe_shape(ctx, cand)
    wl = ctx.target.workload
    return float(sum(op.flops for op in ctx.family.operators(shape, wl.batch_size, wl.sequence_length)))


def kept(n: int, ratio: float) -> int:
    """Units left after structured pruning removes `ratio` of n (at least one)."""
    return max(1, round(n * (1 - ratio)))


def planned_shape(teacher: ModelShape, cand: Candidate, vocab_size: int | None = None) -> ModelShape:
    """The shipped model's shape, known from the recipe before any training."""
    d, p = cand.distill, cand.prune
    heads, ffn = d.heads, d.ffn
    if p.type == "structured":
        heads, ffn = kept(heads, p.ratio), kept(ffn, p.ratio)
    shape = replace(teacher, layers=d.layers, hidden=d.hidden, heads=(heads,) * d.layers, ffn=(ffn,) * d.layers)
    if teacher.kv_heads:  # grouped-query attention: whole groups, so KV heads follow the query heads
        group = teacher.heads[0] // teacher.kv_heads[0]
        shape = replace(shape, kv_heads=(max(1, heads // group),) * d.layers)
    if d.vocab == "task" and vocab_size:
        shape = replace(shape, vocab=vocab_size, id_map_size=teacher.vocab)
    return shape


def recipe_shape(ctx: Context, cand: Candidate) -> ModelShape:
    """The shipped model's shape for this run's teacher and task vocabulary (the screen and the warm start)."""
    return planned_shape(ctx.family.shape_of(ctx.prepared.teacher), cand,
                         None if ctx.vocab_ids is None else len(ctx.vocab_ids))


def latency_of(ctx: Context, shape: ModelShape, quant: QuantParams, sparse_2_4: bool,
               artifact: Path | None) -> Latency:
    wl, dev = ctx.target.workload, ctx.target.device
    if dev.latency == "estimated":
        return roofline.estimate(shape, quant, dev, wl.batch_size, wl.sequence_length, sparse_2_4)
    if artifact is None:
        raise ValueError("measured latency needs an artifact")
    with latency_lease(ctx.cache_dir / "locks", dev.runner):  # one measurement per host/device at a time
        return ctx.backend.measure_latency(artifact, shape, wl.batch_size, wl.sequence_length, dev.threads,
                                           runner=dev.runner)


def screen(ctx: Context, cand: Candidate) -> tuple[dict, list[str]]:
    """Predicted memory (and latency where it is estimated) before training; reasons to reject."""
    shape = recipe_shape(ctx, cand)
    wl, budget = ctx.target.workload, ctx.target.budget
    quant = cand.quant
    if quant.precision == "solver" and quant.layer_options is None:  # priced at the least it can ship (with no
        quant = allocation.cheapest(ctx, shape, quant) or quant  # runnable option, the recipe's own fails check)
    predicted = {"predicted_memory_mb": (ctx.backend.predicted_weight_bytes(shape, quant)
                                         + memory.activation_bytes(shape, wl.batch_size, wl.sequence_length))
                 / memory.MB}
    reasons = list(ctx.backend.check(shape, quant))
    if predicted["predicted_memory_mb"] > budget.memory_mb:
        reasons.append(f"predicted memory {predicted['predicted_memory_mb']:.1f} MB > budget {budget.memory_mb} MB")
    if ctx.target.device.latency == "estimated":
        lat = latency_of(ctx, shape, quant, cand.prune.type == "2:4", None)
        # a candidate ships only within its bound (confidence.py): train only what could ship
        upper, _ = confidence.latency_bound(lat.p99_ms, (), "estimated", ctx.target.device, budget.confidence)
        predicted.update(predicted_p99_latency_ms=lat.p99_ms, predicted_p99_latency_ms_upper=upper)
        if upper > budget.p99_latency_ms:
            reasons.append(f"estimated p99 {lat.p99_ms:.2f} ms, its bound {upper:.2f} ms > budget "
                           f"{budget.p99_latency_ms} ms")
    return predicted, reasons


def measure_artifact(ctx: Context, path: Path, shape: ModelShape, quant: QuantParams, sparse_2_4: bool) -> dict:
    wl, val = ctx.target.workload, ctx.prepared.val
    outputs = ctx.backend.outputs(path, val, ctx.threads)
    scores = ctx.task_type.evaluate(outputs, val.labels.numpy(), ctx.prepared.val_slices)
    atomic_write_npy(path.parent / PREDICTIONS, outputs.argmax(-1).astype(np.int32))  # the accuracy bound's evidence
    weights = ctx.backend.weight_bytes(path)
    activations = memory.activation_bytes(shape, wl.batch_size, wl.sequence_length)
    lat = latency_of(ctx, shape, quant, sparse_2_4, path)
    # measured device: the budget is checked against the peak resident memory the artifact really took;
    # spec-only device: weight bytes (measured) + activation peak (estimated)
    memory_mb = lat.peak_rss_mb if lat.peak_rss_mb is not None else (weights + activations) / memory.MB
    upper, bound_method = confidence.latency_bound(lat.p99_ms, lat.times_ms, lat.source, ctx.target.device,
                                                   ctx.target.budget.confidence)
    return {"p99_latency_ms_upper": upper, "latency_bound_method": bound_method, "shape": asdict(shape),
            "eval_examples": len(val), **scores, "memory_mb": memory_mb, "weight_mb": weights / memory.MB,
            "activation_mb_estimated": activations / memory.MB, "peak_rss_mb": lat.peak_rss_mb,
            "p50_latency_ms": lat.p50_ms, "p99_latency_ms": lat.p99_ms, "latency_spread": lat.spread,
            "latency_noisy": lat.noisy, "latency_source": lat.source, "latency_detail": lat.detail}


def measure_teacher(ctx: Context, workdir: Path) -> dict:
    teacher = ctx.prepared.teacher
    path = ctx.backend.build(teacher, QuantParams(bits=32), workdir)
    return {**measure_artifact(ctx, path, ctx.family.shape_of(teacher), QuantParams(bits=32), False),
            "artifact": str(path)}


def more_training(ctx: Context) -> distill.MoreTraining | None:
    """What a promoted trial's second rung trains (rungs.py): the space's promote section, early-stopped on the
    held-out training rows; None when the run has no second rung."""
    promote, p = ctx.space.promote if ctx.space else None, ctx.prepared
    if promote is None or not promote.on or p.holdout is None:
        return None
    return distill.MoreTraining(promote.epochs, p.holdout, p.holdout_outputs, promote.patience)


def run_candidate(ctx: Context, cand: Candidate, workdir: Path, log=print,
                  more: distill.MoreTraining | None = None) -> dict:
    """Distill, prune, quantize, measure. Raises CandidateError when the recipe cannot be built. `more`: the
    student is trained further first (a promoted trial's second rung), then pruned, quantized and measured again."""
    p = ctx.prepared
    timings = {}
    t0 = time.perf_counter()
    training: dict = {}
    student = distill.apply(p.teacher, cand.distill, importance=ctx.importance, train_split=p.kd_train,
                            teacher_outputs=p.kd_outputs, cache_dir=ctx.cache_dir, task_key=p.key,
                            seed=ctx.seed, log=log, vocab_ids=ctx.vocab_ids, unk_id=ctx.unk_id,
                            task_type=ctx.task_type, more=more, record=training)
    timings["distill_s"] = time.perf_counter() - t0
    steps = training.pop("rung0_steps", None)  # distillation steps the student got, as trained (None: not recorded)
    if more is not None:
        timings["rung1_training"] = training
        steps = None if steps is None else steps + training.get("steps_run", 0)
    timings["distill_steps"] = steps
    t0 = time.perf_counter()
    kd = KD(p.kd_outputs, cand.distill.temperature, cand.distill.alpha, ctx.task_type)
    prune.apply(student, cand.prune, train_split=p.kd_train, kd=kd, calibration=ctx.calibration, seed=ctx.seed,
                labels=ctx.calibration_labels, log=log)
    timings["prune_s"] = time.perf_counter() - t0
    sparsity = prune.weight_sparsity(student)
    quant, solver = cand.quant, {}
    if quant.precision == "solver" and quant.layer_options is None:  # each layer's bits, within the budget
        t0 = time.perf_counter()
        quant, solver["precision_solver"] = allocation.allocate(ctx, student, quant, cand.prune.type == "2:4", log)
        timings["precision_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    qat.apply(student, quant, train_split=p.kd_train, kd=kd, calibration=ctx.calibration, seed=ctx.seed, log=log)
    timings["qat_s"] = time.perf_counter() - t0
    shape = ctx.family.shape_of(student)
    t0 = time.perf_counter()
    path = ctx.backend.build(student, quant, workdir, ctx.calibration)
    timings["quantize_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = measure_artifact(ctx, path, shape, quant, cand.prune.type == "2:4")
    timings["measure_s"] = time.perf_counter() - t0
    params = sum(p.numel() for p in student.parameters())  # not buffers (position ids, vocab id table)
    # the fp32 student before quantization, loadable with plain from_pretrained (for `export`)
    ctx.family.to_standard(student).save_pretrained(workdir / "hf")
    return {**metrics, "weight_sparsity": sparsity, "parameters": params, "artifact": str(path),
            "distill_examples": len(p.kd_train),
            "heads_per_layer": list(shape.heads), "ffn_per_layer": list(shape.ffn), **solver, **timings}

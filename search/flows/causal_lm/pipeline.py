"""One language-model candidate, start to finish: screen it, cut -> recover -> GGUF -> quantize, then measure the
GGUF that ships (quality in llama.cpp against the teacher; speed and memory in a fresh llama.cpp process, or
estimated from the device's spec). The flow's calls (flows/base.py) are this module's functions.

Per run, once: the teacher's block influence and channel importance (which blocks and channels students keep),
the teacher as an F32 GGUF and its importance matrix, and, when the space leaves the GGML types to the solver,
each tensor class's measured sensitivity to each type. Per student shape (cached, shared by every trial and
worker): the cut and recovered model as a stock Hugging Face directory, its F32 GGUF and its importance matrix.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ... import confidence
from ...backends import llama_cpp as lc
from ...backends.llama_cpp import gguf_file, mixes, quantize
from .recipe import LMRecipe
from ...compress import imatrix as imatrix_mod
from . import student as lm_student
from ...errors import CandidateError, ConfigError
from ...families.base import ModelShape
from ...locks import file_lock, latency_lease
from ...measure import decode
from ...run_dir import JsonCache, atomic_replace_dir, atomic_write_json, link_copy, link_file
from .space import LMSpace, check_against_teacher
from ...target import Target
from ..base import Start
from .task import PreparedLM


@dataclass
class LMContext:
    prepared: PreparedLM
    target: Target
    space: LMSpace
    cache_dir: Path  # results/cache: students hang off cache_dir/lm/<task key>/
    threads: int
    seed: int
    backend: object = None
    # measured once per task by prepare_run (cached), after the budget is known to be feasible at all
    scores: lm_student.Scores | None = None
    teacher_f32: Path | None = None
    sensitivity: mixes.Sensitivity | None = None  # None when the space names the types itself

    @property
    def family(self):
        return self.prepared.family

    @property
    def task_type(self):
        from ...tasks import causal_lm

        return causal_lm

    @property
    def limits(self):
        return self.family.limits(self.teacher_shape)

    @property
    def teacher_shape(self) -> ModelShape:
        return self.family.shape_of(self.prepared.teacher)

    @property
    def work(self) -> Path:
        return self.cache_dir / "lm" / self.prepared.key


def _imatrix(model, prepared: PreparedLM) -> dict:
    standard = prepared.family.to_standard(model)
    return imatrix_mod.collect(standard, prepared.family, gguf_file.linears_of(standard), prepared.calibration_ids,
                               window=prepared.task.window_tokens)


def _save_imatrix(path: Path, im: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **im)
    tmp.replace(path)


def _load_imatrix(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def prepare_run(prepared: PreparedLM, target: Target, space, cache_dir: Path, threads: int, seed: int,
                log=print) -> LMContext:
    """Check the space against the teacher, measure what every trial shares (cached), and refuse a budget no
    recipe of the space can meet before any training."""
    from ... import backends

    if not isinstance(space, LMSpace):
        raise ConfigError(space.path, "-", "a classification space was given for a language-model task; use "
                                           "--space llm (spaces/llm.yaml) or a space with cut/recovery/gguf sections")
    family = prepared.family
    shape = family.shape_of(prepared.teacher)
    check_against_teacher(space, family.limits(shape), shape)
    ctx = LMContext(prepared, target, space, cache_dir, threads, seed, backends.get(target.device.runtime))
    _check_feasible_at_all(ctx)  # from shapes alone: an impossible budget costs no sensitivity sweep
    work = ctx.work
    work.mkdir(parents=True, exist_ok=True)
    with file_lock(work / ".run-prepare.lock"):
        scores_path = work / "scores.safetensors"
        ctx.scores = lm_student.load_scores(scores_path)
        if ctx.scores is None:
            log("teacher: block influence and channel importance on calibration text ...")
            ctx.scores = lm_student.measure_scores(family, prepared.teacher, prepared.calibration_ids)
            lm_student.save_scores(ctx.scores, scores_path)
        teacher_dir = _student_dir(work, None)
        ctx.teacher_f32 = teacher_dir / lc.F32_NAME
        if not ctx.teacher_f32.is_file():
            log("teacher: F32 GGUF and importance matrix on the calibration text (once) ...")
            _build_student_files(prepared, prepared.teacher, teacher_dir, {"recovery_steps": 0})
        if space.solver:
            log("teacher: sensitivity of each tensor class to each GGML type (once; cached) ...")
            rows = sweep_windows(prepared)
            score = lambda p: lc.quality(p, prepared.windows, prepared.reference_path, threads,  # noqa: E731
                                         rows=rows)["kld_mean"]
            ctx.sensitivity = mixes.measure_sensitivity(
                ctx.teacher_f32, _load_imatrix(teacher_dir / "imatrix.npz"), mixes.class_shapes_of(ctx.teacher_f32),
                space.excluded_types, score, work, JsonCache(work / "sensitivity.json"), threads, log)
    return ctx


def sweep_windows(prepared) -> list[int] | None:
    """The evaluation windows the sensitivity sweep scores: all of them for a task without slices; with slices, as
    many as one slice has, taken equally from every slice (the sweep's cost does not grow with the slices, and its
    bit allocation weighs every language alike)."""
    names = prepared.window_slices
    if names is None:
        return None
    per_slice = max(1, prepared.task.eval_windows // len(set(names.tolist())))
    return [int(i) for name in dict.fromkeys(names.tolist()) for i in np.flatnonzero(names == name)[:per_slice]]


def planned_shape(teacher: ModelShape, recipe: LMRecipe) -> ModelShape:
    layers = teacher.layers - recipe.drop_layers
    group = teacher.heads[0] // teacher.kv_heads[0]
    kv = recipe.kv_groups or teacher.kv_heads[0]
    return replace(teacher, layers=layers, heads=(kv * group,) * layers, kv_heads=(kv,) * layers,
                   ffn=(recipe.ffn or teacher.ffn[0],) * layers)


def _priced(family, shape: ModelShape) -> tuple[list, int]:
    return mixes.planned_class_shapes(family.tensors(shape))


def resolve(ctx: LMContext, recipe: LMRecipe) -> LMRecipe:
    """With the solver, the GGML type of each class: the lowest predicted KLD (measured sensitivities, additive)
    within the recipe's bits per weight over the typed classes, as resident in llama.cpp's memory (a repacked type
    counts twice: mixes.REPACKED_TYPES). Two recipes that resolve alike build one model."""
    if recipe.bits_per_weight is None:
        return recipe
    classes, _ = _priced(ctx.family, planned_shape(ctx.teacher_shape, recipe))
    s = ctx.sensitivity
    opts = {c.name: [t for t in s.options.get(c.name, [mixes.REFERENCE]) if c.fits(t)] for c in classes}
    points = mixes.front(classes, opts, s.increase, s.reference_kld, resident=True)
    if not points:
        raise CandidateError(f"no GGML type fits every tensor of this shape (options {opts}); keep cut.ffn a "
                             "multiple of 32")
    elements = sum(r * k for c in classes for r, k in c.matrices)
    best = mixes.best_within(points, int(recipe.bits_per_weight * elements / 8))
    if best is None:  # below the smallest mix: the smallest one (the screen prices what is really built)
        best = points[0]
    # what is built: the types; the sampled bits per weight stays in the trial's params, not in the recipe, so two
    # sizes that resolve to one mix are one model (built once)
    return replace(recipe, types=tuple(sorted(best.types.items())), bits_per_weight=None)


def _tensor_and_decode_bytes(family, shape: ModelShape, recipe: LMRecipe) -> tuple[int, int, int]:
    """(bytes of the GGUF's tensors, bytes resident in llama.cpp's memory, bytes one decode step reads)."""
    classes, other = _priced(family, shape)
    types = dict(recipe.types)
    tensor = mixes.mix_bytes(classes, types) + other
    resident = mixes.mix_bytes(classes, types, resident=True) + other
    embedding = sum(c.bytes(types.get(c.name, mixes.REFERENCE)) for c in classes if c.name == "embedding")
    # one decode step reads every block weight and the output head; with tied embeddings the head is the table
    decode_bytes = tensor - (0 if shape.tied_embeddings else embedding)
    return tensor, resident, decode_bytes


def _estimate(family, target: Target, shape: ModelShape, recipe: LMRecipe) -> decode.LMEstimate:
    _, resident, decode_bytes = _tensor_and_decode_bytes(family, shape, recipe)
    types = {t for _, t in recipe.types} or {mixes.REFERENCE}
    return decode.estimate(shape, resident, decode_bytes, types, target.device, target.workload)


def screen(ctx: LMContext, recipe: LMRecipe) -> tuple[dict, list[str]]:
    """Predicted memory, and speed where it is estimated, from the recipe alone; reasons to reject."""
    est = _estimate(ctx.family, ctx.target, planned_shape(ctx.teacher_shape, recipe), recipe)
    budget = ctx.target.budget
    predicted = {"predicted_memory_mb": est.memory_mb}
    reasons = []
    if est.memory_mb > budget.memory_mb:
        reasons.append(f"predicted memory {est.memory_mb:.1f} MB > budget {budget.memory_mb:g} MB")
    if ctx.target.device.latency == "estimated":
        predicted.update(predicted_tpot_p99_ms=est.tpot_p99_ms, predicted_ttft_ms=est.ttft_ms)
        if est.tpot_p99_ms > budget.tpot_p99_ms:
            reasons.append(f"estimated p99 per output token {est.tpot_p99_ms:.2f} ms > budget {budget.tpot_p99_ms:g} ms")
        if budget.ttft_ms is not None and est.ttft_ms > budget.ttft_ms:
            reasons.append(f"estimated time to first token {est.ttft_ms:.1f} ms > budget {budget.ttft_ms:g} ms")
    return predicted, reasons


def _check_feasible_at_all(ctx: LMContext) -> None:
    """The smallest recipe the space allows (most layers dropped, narrowest cuts, smallest types): if it does not
    fit the memory or speed budget, nothing will."""
    from ...space import values

    k = ctx.space.knobs
    top = lambda name: max(values(k[name]))  # noqa: E731
    low = lambda name: min(values(k[name]))  # noqa: E731
    recipe = LMRecipe(drop_layers=top("cut.drop_layers"), ffn=low("cut.ffn"), kv_groups=low("cut.kv_groups"))
    classes, _ = _priced(ctx.family, planned_shape(ctx.teacher_shape, recipe))
    # each class at its smallest type as resident in memory: the solver's smallest mix (no sensitivity needed)
    allowed = (mixes.options(classes, ctx.space.excluded_types) if ctx.space.solver else
               {c.name: values(k[f"gguf.types.{c.name}"]) for c in classes if f"gguf.types.{c.name}" in k})
    smallest = {c.name: min(allowed[c.name], key=c.resident_bytes) for c in classes if allowed.get(c.name)}
    recipe = replace(recipe, types=tuple(sorted(smallest.items())))
    predicted, reasons = screen(ctx, recipe)
    path, budget = ctx.target.path, ctx.target.budget
    if predicted["predicted_memory_mb"] > budget.memory_mb:
        raise ConfigError(path, "budget.memory_mb", f"{budget.memory_mb:g} MB, but the smallest recipe in "
                                                    f"{ctx.space.path} needs {predicted['predicted_memory_mb']:.1f} MB "
                                                    "(weights + KV cache at the context length + runtime); raise "
                                                    "the budget, shorten workload.context_tokens or widen the space")
    for key, name in (("predicted_tpot_p99_ms", "tpot_p99_ms"), ("predicted_ttft_ms", "ttft_ms")):
        limit = getattr(budget, name)
        if key in predicted and limit is not None and predicted[key] > limit:
            raise ConfigError(path, f"budget.{name}", f"{limit:g} ms, but the fastest recipe in {ctx.space.path} is "
                                                      f"estimated at {predicted[key]:.2f} ms; raise the budget or "
                                                      "widen the space")


def warm_start(ctx: LMContext, trials: int) -> list[Start]:
    """The first recipes of a new study: the least-cut model (the uncut teacher, with the shipped space) quantized at
    the sizes the budget admits, before any training is spent on cuts. It needs none (about 40 s each here, in
    `run --target local_cpu_llm --task smollm2` for issue 10) and it is what users try first by hand with
    llama.cpp's presets; at most a third of the run's trials, spread from the smallest feasible size to the largest.
    Empty when the space samples types itself or always cuts."""
    from ...space import Choice, Range, values

    k = ctx.space.knobs
    if not ctx.space.solver:
        return []
    teacher = ctx.teacher_shape
    least = {"cut.drop_layers": min(values(k["cut.drop_layers"])), "cut.ffn": max(values(k["cut.ffn"])),
             "cut.kv_groups": max(values(k["cut.kv_groups"]))}
    base = LMRecipe(drop_layers=least["cut.drop_layers"],
                    ffn=None if least["cut.ffn"] == teacher.ffn[0] else least["cut.ffn"],
                    kv_groups=None if least["cut.kv_groups"] == teacher.kv_heads[0] else least["cut.kv_groups"])
    if base.cuts:
        return []
    seen, feasible = set(), []
    for bpw in values(k["gguf.bits_per_weight"]):
        recipe = resolve(ctx, replace(base, bits_per_weight=bpw))
        if recipe.types not in seen and not screen(ctx, recipe)[1]:
            feasible.append(bpw)
        seen.add(recipe.types)
    n = max(1, trials // 3)
    if len(feasible) > n:
        feasible = [feasible[round(i * (len(feasible) - 1) / max(1, n - 1))] for i in range(n)] if n > 1 \
            else feasible[-1:]
    tunable = {name for name in (*least, "gguf.bits_per_weight") if isinstance(k[name], (Range, Choice))}
    return [Start({name: value for name, value in {**least, "gguf.bits_per_weight": bpw}.items() if name in tunable},
                  {"warm_start": True, "largest_admitted": False}) for bpw in feasible]


# -- building ------------------------------------------------------------------------------------------------
def _student_key(recipe: LMRecipe | None, seed: int) -> str:
    if recipe is None or not recipe.cuts:
        return "teacher"
    cut = {k: getattr(recipe, k) for k in ("drop_layers", "ffn", "kv_groups", "recovery_steps")}
    return hashlib.sha256(json.dumps({**cut, "seed": seed}, sort_keys=True).encode()).hexdigest()[:16]


def _student_dir(work: Path, recipe: LMRecipe | None, seed: int = 0) -> Path:
    return work / "students" / _student_key(recipe, seed)


def _build_student_files(prepared: PreparedLM, model, out: Path, meta: dict) -> None:
    """hf/ (stock Hugging Face directory, safetensors), the F32 GGUF and the importance matrix, swapped in whole."""
    standard = prepared.family.to_standard(model)

    def fill(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        standard.save_pretrained(tmp / "hf")
        prepared.tokenizer.save_pretrained(tmp / "hf")
        if model is prepared.teacher:
            _link_same_weights(tmp / "hf", prepared.teacher_dir)
        gguf_file.write_f32(standard, tmp / lc.F32_NAME, prepared.task.gguf_template)
        _save_imatrix(tmp / "imatrix.npz", _imatrix(model, prepared))
        atomic_write_json(tmp / "student.json", {**meta, "shape": asdict(prepared.family.shape_of(model))})

    atomic_replace_dir(fill, out)


def _link_same_weights(hf: Path, teacher_dir: Path) -> None:
    """The uncut teacher's weights come out byte-identical to the cached teacher's: one file on disk, not two
    (~0.5 GB for SmolLM2-135M in fp32; CI once ran out of disk)."""
    import filecmp

    for written in hf.glob("*.safetensors"):
        cached = teacher_dir / written.name
        if cached.is_file() and cached.stat().st_size == written.stat().st_size \
                and filecmp.cmp(written, cached, shallow=False):
            written.unlink()
            link_file(cached, written)


def _student(ctx: LMContext, recipe: LMRecipe, log) -> tuple[Path, dict]:
    """The student's files (cached by its cut, shared by every trial and worker) and what its training took."""
    folder = _student_dir(ctx.work, recipe, ctx.seed)
    with file_lock(folder.with_name(folder.name + ".lock")):  # one worker trains a student at a time
        if not (folder / "student.json").is_file():
            t0 = time.perf_counter()
            p = ctx.prepared
            student = lm_student.cut(ctx.family, p.teacher, recipe, ctx.scores)
            stats = lm_student.recover(ctx.family, student, p.teacher, p.calibration_ids, recipe.recovery_steps,
                                       seed=ctx.seed, log=log)
            _build_student_files(p, student, folder, {**stats, "student_s": time.perf_counter() - t0})
    return folder, json.loads((folder / "student.json").read_text())


def speed(family, target: Target, locks: Path, path: Path, shape: ModelShape, recipe: LMRecipe) -> dict:
    """Time to first token, time per output token (with its bound) and memory of the GGUF at `path` on `target`:
    estimated from the shape and the recipe's types, or measured in a fresh llama.cpp process (one at a time per
    host: `locks`)."""
    dev, wl = target.device, target.workload
    confidence_level = target.budget.confidence
    if dev.latency == "estimated":
        est = _estimate(family, target, shape, recipe)
        upper, how = confidence.latency_bound(est.tpot_p99_ms, (), "estimated", dev, confidence_level)
        return {"ttft_ms": est.ttft_ms, "tpot_p50_ms": est.tpot_p50_ms, "tpot_p99_ms": est.tpot_p99_ms,
                "tpot_p99_ms_upper": upper, "latency_bound_method": how,
                "prefill_tok_s": wl.prompt_tokens / (est.ttft_ms / 1000), "decode_tok_s": 1000 / est.tpot_p50_ms,
                "memory_mb": est.memory_mb, "peak_rss_mb": None, "latency_spread": 0.0, "latency_noisy": False,
                "latency_source": "estimated", "latency_detail": est.detail}
    with latency_lease(locks, dev.runner):  # one measurement per host/device at a time
        s = lc.measure_speed(path, wl, dev.threads, runner=dev.runner)
    return {**{k: s[k] for k in ("ttft_ms", "tpot_p50_ms", "tpot_p99_ms", "prefill_tok_s", "decode_tok_s",
                                 "peak_rss_mb", "latency_spread", "latency_noisy")},
            "memory_mb": s["peak_rss_mb"], "latency_source": "measured", "latency_detail": s["speed_detail"],
            **dict(zip(("tpot_p99_ms_upper", "latency_bound_method"),
                       confidence.latency_bound(s["tpot_p99_ms"], s["tpot_steps_ms"], "measured", dev,
                                                confidence_level)))}


def measure_gguf(ctx: LMContext, path: Path, shape: ModelShape, recipe: LMRecipe) -> dict:
    written = quantize.tensor_types(path)
    counts: dict[str, int] = {}
    for t in written.values():
        counts[t] = counts.get(t, 0) + 1
    p = ctx.prepared
    return {**lc.quality(path, p.windows, p.reference_path, ctx.threads, p.window_slices), **speed(ctx.family, ctx.target, ctx.cache_dir / "locks", path, shape, recipe),
            "weight_mb": quantize.weight_bytes(path) / 2**20, "file_mb": lc.file_mb(path),
            "kv_cache_mb": decode.kv_bytes(shape, ctx.target.workload.context_tokens) / 2**20,
            "bits_per_weight": quantize.bits_per_weight(path),
            "types_written": " ".join(f"{t}x{n}" for t, n in sorted(counts.items())),
            "layers": shape.layers, "parameters": _parameters(shape, ctx)}


def _parameters(shape: ModelShape, ctx: LMContext) -> int:
    return sum(t.elements for t in ctx.family.tensors(shape))


def teacher_recipe(family, shape: ModelShape) -> LMRecipe:
    """The teacher as a recipe: every tensor class in F32, the output head too."""
    classes, _ = _priced(family, shape)
    return LMRecipe(types=tuple(sorted((c.name, "F32") for c in classes)))


def measure_teacher(ctx: LMContext, workdir: Path) -> dict:
    """The teacher as shipped-in-full: its F32 GGUF, measured like every candidate."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / lc.ARTIFACT_NAME
    path.unlink(missing_ok=True)
    link_file(ctx.teacher_f32, path)
    f32 = teacher_recipe(ctx.family, ctx.teacher_shape)
    return {**measure_gguf(ctx, path, ctx.teacher_shape, f32), "artifact": str(path), "types": "F32"}


def run_candidate(ctx: LMContext, recipe: LMRecipe, workdir: Path, log=print, more=None) -> dict:
    """Cut -> recover -> F32 GGUF -> llama.cpp's quantizer -> measure. Raises CandidateError when llama.cpp
    refuses the recipe. `more` is always None: a language-model run has one rung (no `more_training`)."""
    t0 = time.perf_counter()
    folder, student = _student(ctx, recipe, log)
    student_s = time.perf_counter() - t0
    workdir.mkdir(parents=True, exist_ok=True)
    link_copy(folder / "hf", workdir / "hf")  # the fp32 student before quantization, for `export`
    t0 = time.perf_counter()
    mix = quantize.Mix(mixes.REFERENCE, dict(recipe.types), recipe.imatrix)
    im = _load_imatrix(folder / "imatrix.npz") if recipe.imatrix else None
    path = lc.build(folder / lc.F32_NAME, mix, workdir / lc.ARTIFACT_NAME, im, ctx.threads)
    quantize_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    shape = ModelShape.from_json(student["shape"])
    metrics = measure_gguf(ctx, path, shape, recipe)
    return {**metrics, "artifact": str(path), "student_s": student_s, "quantize_s": quantize_s,
            "measure_s": time.perf_counter() - t0, "recovery_steps": student.get("recovery_steps", 0),
            "recovery_kl_first": student.get("recovery_kl_first"), "recovery_kl_last": student.get("recovery_kl_last"),
            "types": " ".join(f"{c}={t}" for c, t in recipe.types)}

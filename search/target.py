"""Target: the device (measured here, or described by its spec), the workload and the budget."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from . import backends, flows
from .confidence import DEFAULT_CONFIDENCE
from .errors import ConfigError
from .schema import REQUIRED, Reader, load_yaml, resolve

TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"
PRECISIONS = ("fp32", "fp16", "int8", "int4")
# kernels with an efficiency of their own beside the precisions' (calibration fits each): static int8 runs
# the unfused QDQ graph, weight-only MatMulNBits differs per bit width
KERNEL_CLASSES = ("int8_static", "w8", "w4", "w2")
# an estimated latency's upper bound without a calibration or a stated error: the uncalibrated roofline's median
# |error| measured against local_cpu was 41% (bench latency), so 50% is assumed, and labelled so
ASSUMED_LATENCY_ERROR_PCT = 50.0


@dataclass(frozen=True)
class DeviceSpec:
    """Public spec of a device: what the roofline latency estimate needs."""

    latency: str  # "measured" (run the artifact here) or "estimated" (roofline from this spec)
    memory_mb: float
    memory_bandwidth_gbps: float | None = None
    peak_tops: dict = field(default_factory=dict)  # precision -> dense tera-ops/s
    sparse_2_4_speedup: float = 1.0  # end-to-end credit for 2:4 sparsity, only as measured evidence says
    compute_efficiency: float | dict = 0.5  # one factor, or one per precision (as calibration fits them)
    bandwidth_efficiency: float = 0.7
    op_overhead_us: float | dict = 10.0  # one value, or one per kernel class (as calibration fits them)
    run_overhead_us: float | dict = 0.0  # fixed cost per inference (session, shape sub-graph), likewise
    # per weight block of a block-quantized kernel (its scale and zero point, the dequantisation per block): what
    # makes small blocks slower than their bytes say; per kernel class, only as calibration fits it (else 0)
    block_cost_ns: float | dict = 0.0
    tail_factor: float = 1.2  # estimated p99 = p50 * tail_factor
    threads: int | None = 1  # for measured latency; None: an estimated device whose file gives no thread count
    calibration: str = ""  # where fitted factors came from, when a calibration file overrode the YAML
    runner: object = None  # measure.latency.Runner: measure on a reachable device instead of here
    runtime: str = "onnxruntime"  # the runtime backend that builds and runs the artifact (backends/)
    # estimated latency only: the estimator's relative error at the bound's confidence, and where that figure
    # comes from (the calibration's out-of-sample error, the target file, or the assumed default)
    latency_error_pct: float | None = None
    latency_error_source: str = ""
    fitted_kernels: tuple = ()  # kernel classes a calibration fitted (measure/calibrate.py); others are assumed


@dataclass(frozen=True)
class Workload:
    batch_size: int
    sequence_length: int


@dataclass(frozen=True)
class LMWorkload:
    """What a chat user does with a language model: a prompt, a reply, in a context allocated at
    `context_tokens` (the KV cache is sized by it)."""

    prompt_tokens: int = 128
    gen_tokens: int = 64
    context_tokens: int = 2048


@dataclass(frozen=True)
class AccuracyFloor:
    absolute: float | None = None
    max_drop: float | None = None  # in accuracy points as a fraction (0.01 = 1 point)
    slices: tuple[tuple[str, "AccuracyFloor"], ...] = ()  # a slice's own floor (`slices: {tweets: {max_drop: ..}}`)

    def resolve(self, teacher_accuracy: float) -> float:
        return self.absolute if self.absolute is not None else teacher_accuracy - self.max_drop

    def on_slice(self, name: str) -> "AccuracyFloor":
        """The floor of one slice of the task: its own where the target gives one, else this one."""
        return dict(self.slices).get(name, self)

    def describe(self) -> str:
        return f">= {self.absolute}" if self.absolute is not None else f"teacher - {self.max_drop}"


@dataclass(frozen=True)
class QualityLimit:
    """A language model's quality budget against its teacher: `key` is an objective's budget key
    (kld_ceiling, top1_agreement_floor, perplexity_ratio_ceiling), `value` absolute."""

    key: str
    value: float

    def describe(self) -> str:
        return "absolute"


@dataclass(frozen=True)
class Budget:
    memory_mb: float
    p99_latency_ms: float | None = None  # encoders: one inference
    accuracy_floor: AccuracyFloor | None = None
    tpot_p99_ms: float | None = None  # language models: p99 time per output token
    ttft_ms: float | None = None  # language models, optional: median time to first token
    quality_limit: QualityLimit | None = None  # language models
    confidence: float = DEFAULT_CONFIDENCE  # one-sided level of the bounds a shipped candidate must meet (confidence.py)


@dataclass(frozen=True)
class Target:
    name: str
    path: Path
    device: DeviceSpec
    workload: Workload | LMWorkload
    budget: Budget
    device_path: Path | None = None  # the file whose device this is (a `base:`); its calibration applies
    kind: str = ""  # the task kind whose workload and budget it gives (flows/: the one that ships on its runtime)

    @property
    def calibration(self) -> Path:
        """Where this target's device calibration is read from and `bench latency` writes it."""
        return calibration_path(self.device_path or self.path)


def _efficiency(dev: Reader):
    if isinstance(dev.data.get("compute_efficiency"), dict):
        r = dev.section("compute_efficiency")
        out = {p: r.number(p, default=None, lo=0, hi=10, lo_open=True) for p in PRECISIONS + KERNEL_CLASSES}
        r.done()
        return {p: v for p, v in out.items() if v is not None}
    return dev.number("compute_efficiency", default=0.5, lo=0, hi=1, lo_open=True)


def calibration_path(target_path: Path) -> Path:
    return target_path.with_name(target_path.stem + ".calibration.json")


def _number_or_map(value):
    return {k: float(v) for k, v in value.items()} if isinstance(value, dict) else float(value)


def _calibrated_error(fit: dict, path: Path, spec: DeviceSpec) -> dict:
    """The calibration's own out-of-sample error replaces an assumed one (not one the target file states)."""
    if "slowdown_pct_q95" not in fit or not spec.latency_error_source.startswith("assumed"):
        return {}
    return {"latency_error_pct": float(fit["slowdown_pct_q95"]),
            "latency_error_source": f"calibrated: 95th percentile of measured / estimated - 1, out-of-sample over "
                                    f"{fit['candidates']} artifacts ({path.name})"}


def _apply_calibration(spec: DeviceSpec, target_path: Path) -> DeviceSpec:
    """Factors fitted by `python -m search bench latency` replace the assumed ones (see calibrate.py)."""
    import json
    from dataclasses import replace

    path = calibration_path(target_path)
    if not path.is_file():
        return spec
    try:
        fit = json.loads(path.read_text())
        return replace(spec, compute_efficiency=dict(fit["compute_efficiency"]),
                       bandwidth_efficiency=float(fit["bandwidth_efficiency"]),
                       op_overhead_us=_number_or_map(fit["op_overhead_us"]),
                       run_overhead_us=_number_or_map(fit.get("run_overhead_us", 0.0)),
                       block_cost_ns=_number_or_map(fit.get("block_cost_ns", 0.0)),  # older fits: none
                       calibration=f"calibrated on {fit['measured_runs']} measured artifacts ({path.name})",
                       # older files list no classes: those it has factors for are the ones it fitted
                       fitted_kernels=tuple(fit.get("kernel_classes", fit["compute_efficiency"])),
                       **_calibrated_error(fit, path, spec))
    except (ValueError, KeyError, TypeError) as exc:
        from .errors import ConfigError

        raise ConfigError(path, "-", f"unreadable calibration ({exc}); delete it or re-run "
                                     "`python -m search bench latency`") from None


def _runner(dev: Reader, latency: str):
    if not dev.has("runner"):
        return None
    from .measure.latency import Runner

    r = dev.section("runner")
    runner = Runner(command=r.string("command"), python=r.string("python", default="python3"),
                    workdir=r.string("workdir", default="/tmp/search-probe"))
    r.done()
    if latency != "measured":
        raise dev.error("runner", "a runner measures on the device: set device.latency to `measured`")
    return runner


def _latency_error(dev: Reader, latency: str) -> dict:
    stated = dev.number("latency_error_pct", default=None, lo=0, hi=1000)
    if latency != "estimated":
        if stated is not None:
            raise dev.error("latency_error_pct", "only an estimated latency has an estimator error; a measured one "
                                                 "is bounded from its runs: remove it")
        return {}
    if stated is not None:
        return {"latency_error_pct": stated, "latency_error_source": "the estimator's error stated in the target"}
    return {"latency_error_pct": ASSUMED_LATENCY_ERROR_PCT,
            "latency_error_source": f"assumed {ASSUMED_LATENCY_ERROR_PCT:g}% error of an uncalibrated estimate"}


def _with_base(path: Path, raw, chain: tuple = ()) -> tuple:
    """`base: NAME` (a target in targets/, or a path beside this file): every top-level section this file does not
    give is the base's (a section it gives replaces the base's whole section, so a budget never mixes two files'
    keys). Returns (the merged mapping, the file whose device it is: its calibration applies)."""
    if not isinstance(raw, dict) or "base" not in raw:
        return raw, path
    given = raw["base"]
    if not isinstance(given, str) or not given.strip():
        raise ConfigError(path, "base", f"got {given!r}; give a target's name in targets/ (e.g. raspberry_pi5) or "
                                        "a path to its YAML file")
    beside = [path.parent / given, path.parent / f"{given}.yaml"]
    base = next((c for c in beside if c.is_file()), None) or resolve(given, TARGETS_DIR)
    if not base.is_file():
        raise ConfigError(path, "base", f"no target file {given!r}; give a target's name in targets/ (e.g. "
                                        "raspberry_pi5) or a path to its YAML file")
    if base.resolve() in {c.resolve() for c in chain + (path,)}:
        files = " -> ".join(c.name for c in chain + (path, base))
        raise ConfigError(path, "base", f"{given!r} makes a cycle of bases ({files}); remove one of them")
    base_raw, base_device = _with_base(base, load_yaml(base, "target"), chain + (path,))
    _parse(base, base_raw, base_device, calibrated=False)  # the base on its own: its errors name its file
    merged = {**base_raw, **{k: v for k, v in raw.items() if k != "base"}}
    if "name" not in raw:  # the base's name is not this target's
        merged["name"] = path.stem
    return merged, (base_device if "device" not in raw else path)


def load_target(name_or_path: str, calibrated: bool = True, kind: str | None = None, asked_by: str = "the task") \
        -> Target:
    """kind: the task kind whose workload and budget the file gives (default: the kind that ships on its runtime);
    a kind that does not ship on the file's runtime is refused, naming both (and `asked_by`: what asked for it)."""
    path = resolve(name_or_path, TARGETS_DIR)
    return _parse(path, *_with_base(path, load_yaml(path, "target")), calibrated=calibrated, kind=kind,
                  asked_by=asked_by)


def _a(words: str) -> str:
    return f"{'an' if words[:1] in 'aeiou' else 'a'} {words}"


def _parse(path: Path, raw, device_file: Path, calibrated: bool, kind: str | None = None,
           asked_by: str = "the task") -> Target:
    """A target from its YAML mapping (bases merged in); errors name `path`."""
    top = Reader(path, raw)
    name = top.string("name", default=path.stem)

    dev = top.section("device")
    latency = dev.string("latency", choices=("measured", "estimated"))
    memory_mb = dev.number("memory_mb", lo=0, lo_open=True)
    estimated = latency == "estimated"
    bw = dev.number("memory_bandwidth_gbps", default=REQUIRED if estimated else None, lo=0, lo_open=True)
    peak = {}
    if dev.has("peak_tops") or estimated:
        peaks = dev.section("peak_tops")
        for precision in PRECISIONS:
            peak[precision] = peaks.number(precision, default=None, lo=0, lo_open=True)
        peaks.done()
        peak = {k: v for k, v in peak.items() if v is not None}
        if estimated and "fp32" not in peak:
            raise peaks.error("fp32", "missing; an estimated device needs at least the fp32 peak")
    spec = DeviceSpec(
        latency=latency,
        memory_mb=memory_mb,
        memory_bandwidth_gbps=bw,
        peak_tops=peak,
        sparse_2_4_speedup=dev.number("sparse_2_4_speedup", default=1.0, lo=1.0, hi=2.0),
        compute_efficiency=_efficiency(dev),
        bandwidth_efficiency=dev.number("bandwidth_efficiency", default=0.7, lo=0, hi=1, lo_open=True),
        op_overhead_us=dev.number("op_overhead_us", default=10.0, lo=0),
        tail_factor=dev.number("tail_factor", default=1.2, lo=1.0),
        # an estimate does not use it; it is what the deploy card's command lines say, so none is invented
        threads=dev.number("threads", default=None if estimated else 1, lo=1, hi=256, integer=True),
        runner=_runner(dev, latency),
        runtime=dev.string("runtime", default=backends.DEFAULT, choices=tuple(backends.names())),
        **_latency_error(dev, latency),
    )
    dev.done()
    spec = _apply_calibration(spec, device_file) if calibrated else spec  # an inherited device: the base's fit

    # the workload and the budget are the task kind's (flows/*/inputs.py)
    # the workload's keys tell kinds on one runtime apart (batch_size + sequence_length: text; + image_size_px: images)
    accepted = flows.of_workload(spec.runtime, raw.get("workload"))
    native = accepted[0] if accepted else flows.for_runtime(spec.runtime)
    kind = kind or native
    schema = flows.inputs(kind)
    mine = flows.inputs(native)
    mismatch = ("device.runtime", spec.runtime) if spec.runtime not in schema.RUNTIMES else \
        ("workload", "its workload") if accepted and kind not in accepted else None
    if mismatch:
        raise ConfigError(path, mismatch[0], f"{mismatch[1]} ({_a(mine.DESCRIPTION)} target), but {asked_by} is "
                                             f"{_a(schema.DESCRIPTION)} task; give {_a(mine.DESCRIPTION)} task "
                                             f"({mine.TASK_HINT}) or {_a(schema.DESCRIPTION)} target (e.g. "
                                             f"--target {schema.EXAMPLE_TARGET})")
    wl = top.section("workload")
    workload = schema.read_workload(wl)
    wl.done()

    bud = top.section("budget")
    budget_memory = bud.number("memory_mb", lo=0, lo_open=True)
    if budget_memory > spec.memory_mb:
        raise bud.error("memory_mb", f"got {budget_memory}; more than the device has (device.memory_mb = "
                                     f"{spec.memory_mb}): lower it")
    budget = schema.read_budget(bud, spec, budget_memory)
    budget = replace(budget, confidence=bud.number("confidence", default=DEFAULT_CONFIDENCE, lo=0.5, hi=0.999))
    bud.done()
    top.done()
    return Target(name=name, path=path, device=spec, workload=workload, budget=budget, device_path=device_file,
                  kind=kind)

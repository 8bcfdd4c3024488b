"""What a language-model run reads before anything is loaded: the runtimes it ships on, a target's workload (a chat
turn: prompt, reply, context) and budget (memory, p99 time per output token, optionally time to first token, exactly
one quality limit against the teacher), its task and space files and their checks (the texts, the teacher's header,
the token counts: nothing loaded). Light: target files are read through it."""
from __future__ import annotations

from ...target import Budget, LMWorkload, QualityLimit

RUNTIMES = ("llama.cpp",)
BUILTIN_TASKS = ("smollm2", "smollm2_languages")  # --task NAME (task.py)
DEFAULT_SPACE = "llm"
DESCRIPTION = "language-model"
EXAMPLE_TARGET = "local_cpu_llm"
TASK_HINT = "--task smollm2, or a file with task_type: causal_lm"
# a language model's quality limit: exactly one, keyed by its objective's budget key (objectives.py)
QUALITY_LIMITS = {"kld_ceiling": (0, 100), "top1_agreement_floor": (0, 1), "perplexity_ratio_ceiling": (1, 1000)}


def read_workload(wl) -> LMWorkload:
    workload = LMWorkload(prompt_tokens=wl.number("prompt_tokens", lo=1, hi=1 << 20, integer=True),
                          gen_tokens=wl.number("gen_tokens", lo=1, hi=1 << 20, integer=True),
                          context_tokens=wl.number("context_tokens", lo=2, hi=1 << 22, integer=True))
    if workload.prompt_tokens + workload.gen_tokens > workload.context_tokens:
        raise wl.error("context_tokens", f"got {workload.context_tokens}; the prompt and the reply "
                                         f"({workload.prompt_tokens} + {workload.gen_tokens} tokens) must fit: "
                                         "raise it or shorten them")
    return workload


def read_budget(bud, device, memory_mb: float) -> Budget:
    given = [k for k in QUALITY_LIMITS if bud.has(k)]
    if len(given) != 1:
        raise bud.error("-", f"{'both ' + ' and '.join(given) if given else 'no quality limit'} given; a "
                             f"{device.runtime} target gives exactly one of {', '.join(QUALITY_LIMITS)} "
                             "(e.g. kld_ceiling: 0.08, mean KL divergence to the teacher in nats/token)")
    lo, hi = QUALITY_LIMITS[given[0]]
    return Budget(memory_mb=memory_mb, tpot_p99_ms=bud.number("tpot_p99_ms", lo=0, lo_open=True),
                  ttft_ms=bud.number("ttft_ms", default=None, lo=0, lo_open=True),
                  quality_limit=QualityLimit(given[0], bud.number(given[0], lo=lo, hi=hi, lo_open=True)))


def load_task(arg: str | None):
    from .task import BUILTIN_LM_TASKS, load_lm_task

    if arg is None or arg in BUILTIN_LM_TASKS:
        return BUILTIN_LM_TASKS[arg or BUILTIN_TASKS[0]]()
    from ...schema import resolve
    from ...tasks import TASKS_DIR

    return load_lm_task(str(resolve(arg, TASKS_DIR)))


def load_space(arg: str):
    from .space import load_lm_space

    return load_lm_space(arg)


def check(task, space, target) -> None:
    from .task import check_files, teacher_sizes
    from .space import check_cuts

    check_files(task)  # the texts, the teacher's header and the token counts: nothing loaded
    check_cuts(space, *teacher_sizes(task))

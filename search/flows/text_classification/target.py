"""A classifier target's workload (a batch of sequences) and budget (memory, p99 latency of one inference, an
accuracy floor): read from the target file by target.py, for the runtimes this kind ships on."""
from __future__ import annotations

from ...target import AccuracyFloor, Budget, Workload

RUNTIMES = ("onnxruntime",)


def read_workload(wl) -> Workload:
    return Workload(batch_size=wl.number("batch_size", lo=1, hi=4096, integer=True),
                    sequence_length=wl.number("sequence_length", lo=1, hi=512, integer=True))


def read_budget(bud, device, memory_mb: float) -> Budget:
    floor_r = bud.section("accuracy_floor")
    absolute = floor_r.number("absolute", default=None, lo=0, hi=1)
    max_drop = floor_r.number("max_drop", default=None, lo=0, hi=1)
    floor_r.done()
    if (absolute is None) == (max_drop is None):
        raise floor_r.error("-", "give exactly one of `absolute` (e.g. 0.95) or `max_drop` "
                                 "(e.g. 0.01 = one point below the teacher)")
    return Budget(memory_mb=memory_mb, p99_latency_ms=bud.number("p99_latency_ms", lo=0, lo_open=True),
                  accuracy_floor=AccuracyFloor(absolute=absolute, max_drop=max_drop))

"""The header every bench summary (results/bench/<name>.md) starts with: when it was measured, on what machine, at
which commit, by which command. One place for these facts, so that a figure copied into the docs
(`python -m search.docs`) always carries them; a number without them cannot be checked or compared."""
from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ..run_dir import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent.parent
FIELDS = ("date (UTC)", "machine", "commit", "command")  # the header's lines, in this order
_LINE = re.compile(r"^- (date \(UTC\)|machine|commit|command): (.*)$")


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (Linux), with its x86 family and model numbers where given (a virtual
    machine may name only the vendor: "AMD EPYC"); elsewhere what the platform says, else 'unknown'."""
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        fields = {}
    name = fields.get("model name") or fields.get("Model") or fields.get("Hardware")
    if not name:
        return platform.processor() or "unknown"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']} model {fields['model']})"
    return name


def ram_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):  # not every OS names these
        return None


def machine(threads: int | str | None) -> str:
    """One line: CPU model, cores (all, and those this process may use), threads the bench used, RAM, and the load
    average as the summary is written (on a shared host other processes' load is part of every timing). `threads`:
    a count, or words where a bench trains and measures at different counts; None where it computes nothing."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    used = "no measurement threads" if threads is None else (
        f"{threads} thread(s) used" if isinstance(threads, int) else f"threads: {threads}")
    ram = ram_gib()
    load = f"; load average {os.getloadavg()[0]:.2f} (1 min)" if hasattr(os, "getloadavg") else ""
    return (f"{cpu_model()}; {os.cpu_count()} cores ({usable} usable by this process); {used}; "
            f"{'RAM unknown' if ram is None else f'{ram:.1f} GiB RAM'}{load}")


def commit(root: Path = ROOT) -> str:
    """The checkout's commit, `(dirty)` when the tree differs from it; 'unknown' outside a git checkout or
    without git (a bench never fails for want of its provenance)."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=9", "HEAD"], capture_output=True,
                              text=True, timeout=30)
        if head.returncode != 0 or not head.stdout.strip():
            return "unknown"
        # untracked files count: a new module the bench imports is a change too (results/ is ignored)
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True,
                                 timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    dirty = changed.returncode != 0 or bool(changed.stdout.strip())
    return head.stdout.strip() + (" (dirty)" if dirty else "")


# the commit as the bench started, when its code was loaded (every bench imports this module first): a tree edited
# while a long bench runs does not change what it measured
_AT_START = commit()


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: the interpreter by its name (its path is this machine's), the rest verbatim."""
    argv = list(getattr(sys, "orig_argv", sys.argv) if argv is None else argv)
    if argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def header(threads: int | str | None, argv: list[str] | None = None, now_s: float | None = None,
           root: Path = ROOT) -> str:
    date = time.strftime("%Y-%m-%d %H:%M", time.gmtime(time.time() if now_s is None else now_s))
    values = (date, machine(threads), _AT_START if root == ROOT else commit(root), f"`{command_line(argv)}`")
    return "\n".join(f"- {k}: {v}" for k, v in zip(FIELDS, values)) + "\n\n"


def write(path: Path, body: str, threads: int | str | None, argv: list[str] | None = None) -> Path:
    """The summary: header, then the bench's own Markdown, written atomically (a reader never sees half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, header(threads, argv) + body)


def read_header(text: str) -> dict[str, str] | None:
    """The header's fields of a summary, or None when it has none (written before headers existed)."""
    fields = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            break
        fields[m.group(1)] = m.group(2)
    return fields if all(k in fields for k in FIELDS) else None


def body(text: str) -> str:
    """A summary without its header: what the bench itself wrote (two runs of one bench differ in the header)."""
    return text.split("\n\n", 1)[1] if read_header(text) is not None else text

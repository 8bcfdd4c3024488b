"""The README's one picture: a finished run's trials, accuracy against memory, the front and the shipped candidate
marked, drawn from the run's own files (study.db, budget.json, teacher.json, selected.json through
report.front_info) and written as a plain SVG: no plotting dependency, and a code host shows it inline.

    python -m search.front_picture results/<run> --caption "<the command and commit that made the run>"

The caption is given, not guessed: a run folder does not record the commit it ran at."""
from __future__ import annotations

import argparse
import math
import sys
from html import escape
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "docs" / "front.svg"
W, H, LEFT, RIGHT, TOP, BOTTOM = 760, 430, 70, 20, 20, 95  # pixels: plot box and room for axes and caption
STYLE = {  # kind -> (fill, stroke, radius px, legend)
    "infeasible": ("none", "#b0b0b0", 4, "over a budget"),
    "feasible": ("#9ecae1", "#3182bd", 4, "within every budget"),
    "front": ("#3182bd", "#08519c", 5, "on the front (accuracy, p99 latency, memory)"),
}


def points(info: dict, shipped: bool = True) -> list[dict]:
    """Every completed trial as (memory MB, accuracy, kind), then the teacher and the selected trial (`shipped`:
    it met every budget at its bounds; else it is only the closest, and said so)."""
    out = [{"x": r["metrics"]["memory_mb"], "y": r["metrics"]["accuracy"], "kind": kind, "trial": r["trial"]}
           for kind in ("infeasible", "feasible", "front") for r in info["groups"][kind]]
    if info.get("teacher"):
        out.append({"x": info["teacher"]["memory_mb"], "y": info["teacher"]["accuracy"], "kind": "teacher"})
    if info.get("selected"):
        m = info["selected"]["metrics"]
        out.append({"x": m["memory_mb"], "y": m["accuracy"], "kind": "shipped" if shipped else "selected",
                    "trial": info["selected"]["trial"]})
    return out


def _floor(budget: dict, teacher: dict | None) -> float | None:
    floor = budget.get("accuracy_floor")
    if isinstance(floor, dict) and "max_drop" in floor and teacher:
        return teacher["accuracy"] - floor["max_drop"]
    return floor.get("absolute") if isinstance(floor, dict) else floor


def svg(pts: list[dict], memory_budget_mb: float | None, floor: float | None, caption: str) -> str:
    """The picture: log memory axis (students and the teacher differ 30x), linear accuracy axis."""
    xs = [p["x"] for p in pts] + ([memory_budget_mb] if memory_budget_mb else [])
    ys = [p["y"] for p in pts] + ([floor] if floor else [])
    lo_x, hi_x = math.log2(min(xs) / 1.25), math.log2(max(xs) * 1.25)
    pad = (max(ys) - min(ys)) * 0.08 or 0.01
    lo_y, hi_y = min(ys) - pad, max(ys) + pad
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    px = lambda v: LEFT + (math.log2(v) - lo_x) / (hi_x - lo_x) * pw  # noqa: E731
    py = lambda v: TOP + (hi_y - v) / (hi_y - lo_y) * ph  # noqa: E731
    el = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
          'font-family="sans-serif" font-size="12">',
          f'<rect width="{W}" height="{H}" fill="white"/>',
          f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>']
    for e in range(math.ceil(lo_x), math.floor(hi_x) + 1):  # powers of two: 2, 4, 8, ... MB
        x = px(2 ** e)
        el += [f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + ph}" stroke="#eee"/>',
               f'<text x="{x:.1f}" y="{TOP + ph + 16}" text-anchor="middle">{2 ** e:g}</text>']
    step = 10 ** math.floor(math.log10((hi_y - lo_y) / 3))
    step *= 2 if (hi_y - lo_y) / step > 8 else 1
    for k in range(math.ceil(lo_y / step), math.floor(hi_y / step) + 1):
        y = py(k * step)
        el += [f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" y2="{y:.1f}" stroke="#eee"/>',
               f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{k * step:.3f}</text>']
    el += [f'<text x="{LEFT + pw / 2}" y="{TOP + ph + 34}" text-anchor="middle">memory (MB, log scale)</text>',
           f'<text x="16" y="{TOP + ph / 2}" text-anchor="middle" transform="rotate(-90 16 {TOP + ph / 2})">'
           'accuracy (validation split)</text>']
    if memory_budget_mb:
        x = px(memory_budget_mb)
        el += [f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + ph}" stroke="#d62728" '
               'stroke-dasharray="5,4"/>',
               f'<text x="{x + 4:.1f}" y="{TOP + 14}" fill="#d62728">memory budget {memory_budget_mb:g} MB</text>']
    if floor:
        y = py(floor)
        el += [f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" y2="{y:.1f}" stroke="#d62728" stroke-dasharray="5,4"/>',
               f'<text x="{LEFT + 6}" y="{y - 5:.1f}" fill="#d62728">accuracy floor {floor:.4f}</text>']
    for p in pts:
        x, y = px(p["x"]), py(p["y"])
        if p["kind"] in STYLE:
            fill, stroke, r, _ = STYLE[p["kind"]]
            el.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{fill}" stroke="{stroke}"/>')
        elif p["kind"] == "teacher":
            el += [f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="#333"/>',
                   f'<text x="{x - 8:.1f}" y="{y - 9:.1f}" text-anchor="end">teacher</text>']
        else:  # the selected trial, drawn last so it is on top
            words = "shipped" if p["kind"] == "shipped" else "selected, not shipped (misses a budget)"
            el += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="9" fill="none" stroke="#d62728" stroke-width="2.5"/>',
                   f'<text x="{x + 12:.1f}" y="{y - 8:.1f}" fill="#d62728" font-weight="bold">{words}: trial '
                   f'{p["trial"]}</text>']
    legend_y = TOP + ph + 56
    for i, (fill, stroke, r, words) in enumerate(STYLE.values()):
        lx = LEFT + i * 210
        el += [f'<circle cx="{lx + 5}" cy="{legend_y - 4}" r="{r}" fill="{fill}" stroke="{stroke}"/>',
               f'<text x="{lx + 14}" y="{legend_y}">{escape(words)}</text>']
    el += [f'<text x="{LEFT}" y="{H - 12}" fill="#444">{escape(caption)}</text>', "</svg>"]
    return "\n".join(el) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.front_picture", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run folder")
    parser.add_argument("--caption", required=True, help="the command and commit that made the run")
    parser.add_argument("--out", default=str(OUT), help=f"where the SVG goes (default {OUT})")
    args = parser.parse_args(argv)
    from .outputs import completed_rows, load_study
    from .report import front_info
    from .run_dir import RunDir, atomic_write_text, read_json

    rd = RunDir(Path(args.run))
    budget, teacher = rd.saved()["budget"], read_json(rd.teacher_json)
    selected = read_json(rd.selected_json, ("trial", "meets_budget"))
    info = front_info(completed_rows(load_study(rd.root), budget), budget, teacher, selected["trial"])
    pts = points(info, shipped=bool(selected["meets_budget"]))
    atomic_write_text(Path(args.out), svg(pts, budget.get("memory_mb"), _floor(budget, teacher), args.caption))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

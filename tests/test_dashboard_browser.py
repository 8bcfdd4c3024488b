"""The dashboard in a real headless Chromium: no console errors, the plotted points are the trials, the axes
turn log where the teacher sits far from the candidates and the budget labels stay on their lines there."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from search.report import front_info, render

CHROMIUM = shutil.which("chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "results" / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000", "--enable-unsafe-swiftshader"]
# performance notices of headless software WebGL/canvas (the 3-D and parallel-coordinates views), not page errors
BENIGN = ("GL Driver Message", "Canvas2D: Multiple readback operations")

if CHROMIUM is None:
    # CI installs Debian's chromium (make setup) and sets SEARCH_REQUIRE_BROWSER=1: missing is a failure there
    pytestmark = pytest.mark.skipif(os.environ.get("SEARCH_REQUIRE_BROWSER") != "1",
                                    reason="chromium not installed (make setup installs it as root)")


def chromium(tmp_path: Path, page: Path, *args: str) -> tuple[str, list[str]]:
    proc = subprocess.run([CHROMIUM or "chromium", *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args,
                           page.as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in proc.stderr.splitlines()
               if ":CONSOLE" in line and not any(b in line for b in BENIGN)]
    return proc.stdout, console


# appended to a rendered page: what plotly drew, read back from the browser as JSON in the DOM: each x axis's
# type, and how far (px) each budget label's left edge sits from the x of the budget it names
PROBE = """<script>setTimeout(() => {
  const out = {};
  for (const id of ['fronts', 'budget-cost']) {
    const gd = document.getElementById(id), layout = gd._fullLayout, left = gd.getBoundingClientRect().left;
    const types = Object.fromEntries(Object.keys(layout).filter(k => /^xaxis\\d*$/.test(k))
                                                         .map(k => [k, layout[k].type]));
    const offsets = Array.from(gd.querySelectorAll('.annotation')).flatMap(a => {
      const budget = a.textContent.match(/budget ([0-9.e+-]+)$/);
      if (!budget) return [];
      const ax = layout[layout.annotations[a.dataset.index].xref.replace('x', 'xaxis')];
      return [a.getBoundingClientRect().left - (left + ax._offset + ax.d2p(parseFloat(budget[1])))];
    });
    out[id] = {types: types, label_offsets_px: offsets};
  }
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 1000)</script>"""


def probed(page: Path) -> Path:
    page.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    return page


def probe_result(dom: str) -> dict:
    return json.loads(re.search(r'<pre id="probe">([^<]*)</pre>', dom).group(1))


def run_info(offset: int, n: int, selected: int) -> dict:
    budget = {"memory_mb": 20.0, "p99_latency_ms": 3.0, "accuracy_floor": 0.95}
    rows = [{"trial": i, "params": {"quant.bits": 4}, "label": f"recipe-{offset}-{i}",
             "metrics": {"accuracy": 0.94 + 0.005 * i, "p99_latency_ms": 1.0 + 0.5 * i + offset,
                         "memory_mb": 5.0 + 3 * i, "latency_source": "estimated"}} for i in range(n)]
    teacher = {"accuracy": 0.99, "p99_latency_ms": 8.0, "memory_mb": 90.0}
    return front_info(rows, budget, teacher, selected)


def test_console_errors_are_seen(tmp_path):
    """The check below is only worth something if a broken page is caught."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    _, console = chromium(tmp_path, page, "--dump-dom")
    assert any("Uncaught ReferenceError" in line for line in console)


def test_two_run_dashboard_renders_both_fronts(tmp_path):
    runs = [("orin", run_info(0, 6, 3)), ("pi5", run_info(1, 4, 2))]
    page = probed(render(runs, tmp_path / "dashboard.html", "orin vs pi5"))
    dom, console = chromium(tmp_path, page, "--dump-dom")
    assert console == [], console
    fronts = dom[dom.index('id="fronts"'):dom.index('id="objectives-3d"')]
    # each completed trial, the teacher and the selection once per subplot, per run
    assert len(re.findall(r'class="point"', fronts)) == 2 * ((6 + 2) + (4 + 2))
    for view in ("objectives-3d", "parallel", "progress"):
        assert f'id="{view}"' in dom and "main-svg" in dom[dom.index(f'id="{view}"'):]
    assert "hypervolume within the budget" in dom and "best accuracy within every budget" in dom
    legend = re.findall(r'class="legendtext"[^>]*>([^<]+)<', dom)
    assert "orin: Pareto front (within budget)" in legend and "pi5: Pareto front (within budget)" in legend
    assert "orin: selected" in legend and "pi5: teacher (fp32)" in legend
    assert "recipe-0-3" in dom and "recipe-1-2" in dom  # the front tables of both runs
    cost = dom[dom.index('id="budget-cost"'):dom.index('id="front-table"')]
    # a step line per resource and run (latency within 20 MB; memory within 3 ms: orin's first 5, pi5's first 3),
    # one point per step plus the one that carries the last level on
    assert "what each budget buys" in cost and "orin: best accuracy" in legend and "pi5: best accuracy" in legend
    assert len(re.findall(r'class="point"', cost)) == (6 + 1) + (4 + 1) + (5 + 1) + (3 + 1)
    probe = probe_result(dom)
    assert probe["fronts"]["types"] == {"xaxis": "linear", "xaxis2": "log"}  # 5-20 MB candidates, 90 MB teacher
    assert probe["budget-cost"]["types"] == {"xaxis": "linear", "xaxis2": "linear"}  # the teacher is not drawn there
    for view in ("fronts", "budget-cost"):  # each run's budget label, per subplot, on its line
        offsets = probe[view]["label_offsets_px"]
        assert len(offsets) == 4 and all(abs(px) < 3 for px in offsets), (view, offsets)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard-two-runs.png"
    chromium(tmp_path, page, "--window-size=1400,900", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_far_teacher_gets_log_axes_with_budget_labels_on_their_lines(tmp_path):
    """The case that squeezed every candidate into the left edge: a 94 MB / 8.6 ms teacher, candidates at
    1-15 MB / 0.3-0.9 ms, a 16 MB / 1 ms budget."""
    budget = {"memory_mb": 16.0, "p99_latency_ms": 1.0, "accuracy_floor": 0.9}
    points = [(0.80, 0.3, 1.2), (0.90, 0.4, 3.0), (0.93, 0.6, 6.5), (0.95, 0.9, 11.0), (0.96, 0.8, 15.0)]
    rows = [{"trial": i, "params": {"quant.bits": 4}, "label": f"recipe-{i}",
             "metrics": {"accuracy": acc, "p99_latency_ms": ms, "memory_mb": mb, "latency_source": "estimated"}}
            for i, (acc, ms, mb) in enumerate(points)]
    info = front_info(rows, budget, {"accuracy": 0.99, "p99_latency_ms": 8.6, "memory_mb": 94.0}, 4)
    page = probed(render([("orin", info)], tmp_path / "dashboard.html", "orin"))
    dom, console = chromium(tmp_path, page, "--dump-dom")
    assert console == [], console
    probe = probe_result(dom)
    assert probe["fronts"]["types"] == {"xaxis": "log", "xaxis2": "log"}
    # the curves alone: 0.3-1.2 ms stays linear; 1.2-19.2 MB (past the budget to show the last level) is log
    assert probe["budget-cost"]["types"] == {"xaxis": "linear", "xaxis2": "log"}
    for view in ("fronts", "budget-cost"):
        offsets = probe[view]["label_offsets_px"]
        assert len(offsets) == 2 and all(abs(px) < 3 for px in offsets), (view, offsets)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard-far-teacher.png"
    chromium(tmp_path, page, "--window-size=1400,3200", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000

"""The dashboard in a real headless Chromium: no console errors, the plotted points are the trials."""
from __future__ import annotations

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
    page = render(runs, tmp_path / "dashboard.html", "orin vs pi5")
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
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard-two-runs.png"
    chromium(tmp_path, page, "--window-size=1400,900", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000

"""docs/spaces.md is generated from the knob tables (search/docs.py); the deploy card's thread count is the
target's, never invented; every bench summary carries its date, machine, commit and command, and the docs show the
latest of each (search/bench/summary.py, notes.py) and name the command and commit of every figure."""
import os
import re
import shutil
import subprocess

import pytest

from search import docs
from search.backends.llama_cpp import LlamaCpp
from search.bench import notes, summary
from search.target import load_target


def test_spaces_page_matches_the_knob_tables():
    assert docs.missing() == [], "a knob without a sentence in search/docs.py"
    assert docs.PAGE.read_text() == docs.render(), "docs/spaces.md is stale: run python -m search.docs"


def test_deploy_card_threads_are_the_targets():
    assert load_target("raspberry_pi5_llm").device.threads == 4  # the Pi 5's cores, stated in its file
    assert load_target("local_cpu_llm").device.threads == 2  # what it is measured with
    assert load_target("raspberry_pi5").device.threads is None  # estimated, no count given: none invented
    card = LlamaCpp().usage({"threads": 4, "workload": {"context_tokens": 2048, "gen_tokens": 64}})
    assert "-t 4" in card and "n_threads=4" in card
    card = LlamaCpp().usage({"threads": None, "workload": {}})
    assert "-t N" in card and "n_threads=N" in card and "core count" in card


def test_every_command_help_points_to_an_existing_docs_page():
    import argparse

    from search.__main__ import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        pages = re.findall(r"docs/[\w-]+\.md", parser.description or "")
        assert pages and parser.description.rstrip().endswith("."), name
        for page in pages:
            assert (docs.PAGE.parent.parent / page).is_file(), (name, page)


# --- bench summaries: written with their provenance, copied into the docs by `python -m search.docs` ---

NOT_RERUN = "not yet re-run with a recorded commit"


def test_summary_header_names_date_machine_commit_and_command(tmp_path):
    path = summary.write(tmp_path / "bench" / "x.md", "# Table\n\n| a |\n", threads=2,
                         argv=["/opt/venv/bin/python", "-m", "search", "bench", "x", "--only", "w4 g32"])
    text = path.read_text()
    head = summary.read_header(text)
    assert list(head) == list(summary.FIELDS) and text.endswith("\n\n# Table\n\n| a |\n")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", head["date (UTC)"])
    assert f"{os.cpu_count()} cores" in head["machine"] and "2 thread(s) used" in head["machine"]
    assert "GiB RAM" in head["machine"] and head["machine"].startswith(summary.cpu_model())
    assert re.search(r"load average \d+\.\d\d \(1 min\)$", head["machine"])
    assert head["command"] == "`python -m search bench x --only 'w4 g32'`"  # the interpreter by name, args quoted
    assert re.fullmatch(r"[0-9a-f]{7,40}( \(dirty\))?|unknown", head["commit"])
    assert summary.read_header("# Table written before headers\n") is None


def test_summary_commit_is_dirty_or_unknown_never_a_crash(tmp_path, monkeypatch):
    assert summary.commit(tmp_path) == "unknown"  # not a git checkout
    if shutil.which("git") is None:
        pytest.skip("no git on this machine: only the 'unknown' case can be checked")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f.py").write_text("a = 1\n")
    subprocess.run([*git, "add", "f.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short=9", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert summary.commit(tmp_path) == head
    (tmp_path / "f.py").write_text("a = 2\n")
    assert summary.commit(tmp_path) == f"{head} (dirty)"

    def no_git(*a, **k):
        raise FileNotFoundError("git")
    monkeypatch.setattr(summary.subprocess, "run", no_git)
    assert summary.commit(tmp_path) == "unknown"


def test_summary_write_is_atomic(tmp_path, monkeypatch):
    path = summary.write(tmp_path / "x.md", "old\n", threads=None)
    before = path.read_text()
    assert "no measurement threads" in summary.read_header(before)["machine"]

    def crash(fd):
        raise OSError("disk full")
    monkeypatch.setattr("search.run_dir.os.fsync", crash)
    with pytest.raises(OSError):
        summary.write(path, "new\n", threads=1)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["x.md"]  # no half file, no temp


def _summary(date: str, body: str) -> str:
    return (f"- date (UTC): {date}\n- machine: cpu; 2 cores (2 usable by this process); 1 thread(s) used; 8.0 GiB RAM\n"
            f"- commit: abc1234\n- command: `python -m search bench x`\n\n{body}")


def test_docs_generator_copies_the_latest_summaries_and_is_idempotent(tmp_path):
    results, docs = tmp_path / "results" / "bench", tmp_path / "docs"
    results.mkdir(parents=True)
    (docs / "bench").mkdir(parents=True)
    page = f"# Benchmarks\n\nintro\n\n{notes.BEGIN}\nstale\n{notes.END}\n\n## Recorded figures\n"
    (results / "x.md").write_text(_summary("2026-12-08 01:00", "# x\n"))
    (results / "old.md").write_text("# written before headers\n")  # no provenance: never copied
    (results / "y.md").write_text(_summary("2026-12-01 00:00", "# y here\n"))
    (docs / "bench" / "y.md").write_text(_summary("2026-12-05 00:00", "# y committed\n"))  # newer: kept
    said = notes.sync(results, docs)
    assert [s.split()[0] for s in said] == ["skipped", "copied", "kept"], said
    assert (docs / "bench" / "x.md").read_text() == (results / "x.md").read_text()
    assert "# y committed" in (docs / "bench" / "y.md").read_text() and not (docs / "bench" / "old.md").exists()
    once = notes.render(page, docs)
    assert once.startswith("# Benchmarks\n\nintro\n\n") and once.endswith("\n\n## Recorded figures\n")
    assert "| [x](bench/x.md) | 2026-12-08 01:00 | abc1234 | `python -m search bench x` |" in once
    assert "stale" not in once
    assert notes.sync(results, docs) == [s for s in said if not s.startswith("copied")]  # nothing new to copy
    assert notes.render(once, docs) == once  # twice: the same page


def test_generated_docs_are_current():
    from search import docs as generator

    assert generator.main(["--check"]) == 0, "run python -m search.docs"


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_benchmark_figure_names_its_command_and_commit():
    page = (docs.PAGE.parent / "benchmarks.md").read_text()
    sections = _sections(page)
    latest = sections.pop("Latest summaries")
    table = latest[latest.index(notes.BEGIN):latest.index(notes.END)]
    for row in [r for r in table.splitlines() if r.startswith("| [")]:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert re.fullmatch(r"[0-9a-f]{7,40}( \(dirty\))?|unknown", cells[2]) and cells[3].startswith("`python"), row
    for title, body in sections.items():
        if title == "Recorded figures":
            continue  # the how-to list: each bullet below is checked
        assert re.search(r"`(python -m search )?(bench|run|replan|make demo)\b", body), f"{title}: no command"
        assert re.search(r"\b[0-9a-f]{7,9}\b", body) or NOT_RERUN in body, f"{title}: no commit"
    how_to = sections["Running each benchmark and reading its table"].split("\n- ")[1:]
    for bullet in how_to:
        if re.search(r"Last runs? here", bullet):
            assert re.search(r"\b[0-9a-f]{7,9}\b", bullet) or NOT_RERUN in bullet, bullet[:60]
    for path in docs.PAGE.parent.glob("*.md"):
        assert "commit not recorded" not in path.read_text(), path.name  # the plain label instead


def _info():
    point = lambda trial, mb, acc: {"trial": trial, "metrics": {"memory_mb": mb, "accuracy": acc}}  # noqa: E731
    return {"groups": {"front": [point(2, 6.4, 0.989)], "feasible": [point(5, 3.4, 0.985)],
                       "infeasible": [point(11, 2.2, 0.972)]},
            "teacher": {"memory_mb": 94.2, "accuracy": 0.988}, "selected": point(2, 6.4, 0.989)}


def test_front_picture_marks_the_shipped_trial_and_carries_its_caption():
    from search import front_picture

    pts = front_picture.points(_info())
    assert [p["kind"] for p in pts] == ["infeasible", "feasible", "front", "teacher", "shipped"]
    picture = front_picture.svg(pts, 16.0, 0.9728, "python -m search run <x> at commit abc1234")
    assert picture == front_picture.svg(pts, 16.0, 0.9728, "python -m search run <x> at commit abc1234")
    assert "shipped: trial 2" in picture and "commit abc1234" in picture and "run &lt;x&gt;" in picture
    assert "memory budget 16 MB" in picture and "accuracy floor 0.9728" in picture
    assert "selected, not shipped" in front_picture.svg(front_picture.points(_info(), shipped=False), 16, None, "c")


def test_readme_picture_is_committed_and_names_its_command_and_commit():
    readme = (docs.PAGE.parent.parent / "README.md").read_text()
    assert "](docs/front.svg)" in readme
    picture = (docs.PAGE.parent / "front.svg").read_text()
    caption = re.findall(r"<text[^>]*>([^<]*)</text>\n</svg>", picture)[0]
    assert caption.startswith("python -m search run") and re.search(r"commit [0-9a-f]{7,40}\b", caption), caption


def test_links_into_the_benchmarks_page_land_on_a_heading():
    page = docs.PAGE.parent / "benchmarks.md"
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}
    for path in [*docs.PAGE.parent.glob("*.md"), docs.PAGE.parent.parent / "README.md"]:
        for anchor in re.findall(r"benchmarks\.md#([\w-]+)", path.read_text()):
            assert anchor in anchors, (path.name, anchor)

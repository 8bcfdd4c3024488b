"""docs/spaces.md is generated from the knob tables (search/docs.py); the deploy card's thread count is the
target's, never invented."""
from search import docs
from search.backends.llama_cpp import LlamaCpp
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
    import re

    from search.__main__ import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        pages = re.findall(r"docs/[\w-]+\.md", parser.description or "")
        assert pages and parser.description.rstrip().endswith("."), name
        for page in pages:
            assert (docs.PAGE.parent.parent / page).is_file(), (name, page)

"""docs/benchmarks.md's results agree with bench/results/latest.json: the section is exactly
what the suite renders from that file, every number in it is a figure of that file, and the
charts it shows exist. The README links to the page."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bench.suite.latest import read_latest
from bench.suite.results_page import BEGIN, END, results_section, section_of, with_section

ROOT = Path(__file__).resolve().parents[3]
LATEST = ROOT / "bench" / "results" / "latest.json"
PAGE = ROOT / "docs" / "benchmarks.md"
#: A number as the page writes one (4,987 · 45.3 · 0.134), not part of a word, a version's
#: tail or an option (p99, 3.11.7, QUICK=1).
NUMBER = re.compile(r"(?<![\w.=-])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def _section() -> str:
    section = section_of(PAGE.read_text())
    assert section is not None, f"{PAGE} has no results section ({BEGIN} ... {END})"
    return section


def test_the_docs_results_section_is_rendered_from_latest_json():
    assert _section() == results_section(read_latest(LATEST)), (
        "docs/benchmarks.md's results differ from bench/results/latest.json: "
        "python -m bench.suite --render-only rewrites them from it"
    )


def _figures(value: object, numbers: set[float], texts: set[str]) -> None:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int | float):
        numbers.add(float(value))
    elif isinstance(value, str):
        texts.update(NUMBER.findall(value))
    elif isinstance(value, dict):
        for item in value.values():
            _figures(item, numbers, texts)
    elif isinstance(value, list):
        numbers.add(float(len(value)))  # "3 rows", "1 round"
        for item in value:
            _figures(item, numbers, texts)


def _written_as(token: str, value: float) -> bool:
    digits = len(token.split(".")[1]) if "." in token else 0
    return token.replace(",", "") == f"{value:.{digits}f}" or token == f"{value:g}"


def test_every_number_in_the_section_is_a_figure_of_latest_json():
    numbers: set[float] = set()
    texts: set[str] = set()
    _figures(json.loads(LATEST.read_text()), numbers, texts)
    strange = [
        token
        for token in NUMBER.findall(_section())
        if token not in texts and not any(_written_as(token, value) for value in numbers)
    ]
    assert not strange, f"numbers in the docs that latest.json does not hold: {strange}"


def test_the_charts_the_section_shows_exist():
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", _section())
    assert images
    for image in images:
        assert (PAGE.parent / image).resolve().is_file(), image


def test_the_readme_links_to_the_results():
    readme = (ROOT / "README.md").read_text()
    assert "docs/benchmarks.md#results" in readme


def test_a_page_gets_its_section_replaced_and_the_rest_kept():
    page = f"# Benchmarks\n\nintro\n\n{BEGIN}\nold\n{END}\n\n## After\n"
    assert with_section(page, f"{BEGIN}\nnew\n{END}") == (
        f"# Benchmarks\n\nintro\n\n{BEGIN}\nnew\n{END}\n\n## After\n"
    )


def test_a_page_without_a_section_gets_it_appended():
    assert with_section("# Benchmarks\n", f"{BEGIN}\nnew\n{END}") == (
        f"# Benchmarks\n\n{BEGIN}\nnew\n{END}\n"
    )

"""docs/testing.md works as written: its files, put together, make a project whose tests pass
(the golden file shown on the page included), and its Python is as ruff formats it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parents[4] / "docs" / "testing.md"
_BLOCK = re.compile(r'^```(\w+) title="([^"]+)"\n(.*?)^```$', re.MULTILINE | re.DOTALL)


def doc_files() -> dict[str, tuple[str, str]]:
    """The page's files: path -> (language, text)."""
    return {path: (language, text) for language, path, text in _BLOCK.findall(DOC.read_text())}


def test_the_page_names_the_project_files_it_walks_through():
    assert set(doc_files()) == {
        "pyproject.toml",
        "shop/points.py",
        "tests/test_points.py",
        "tests/data/orders.ndjson",
        "tests/golden/test_points/test_recorded_orders_give_the_pinned_outputs.json",
        "tests/test_points_backend.py",
    }


def test_the_pages_project_passes_its_tests_on_the_driver(pytester):
    for path, (_, text) in doc_files().items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (pytester.path / "shop" / "__init__.py").write_text("")

    # The driver only: a unit test uses no network (the page's kafka run is an integration one).
    result = pytester.runpytest_subprocess(
        "--pipeline-backend", "driver", "-p", "no:cacheprovider", "-v"
    )

    # The recording's outcomes match the golden file shown on the page.
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_the_recording_gives_the_same_balances*[[]driver[]] PASS*"])


def test_the_pages_python_is_formatted(tmp_path):
    files = []
    for number, (language, text) in enumerate(doc_files().values()):
        if language == "python":
            files.append(tmp_path / f"block_{number}.py")
            files[-1].write_text(text)
    ruff = Path(sys.executable).with_name("ruff")
    config = DOC.parents[1] / "pyproject.toml"
    checked = subprocess.run(
        [str(ruff), "format", "--check", "--diff", "--config", str(config), *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

"""With pytest-xdist, ``--update-golden`` writes a file checked on two workers once, and the
controller lists the files every worker wrote.

Without xdist installed (it is not one of this project's dependencies), its workers are played
by pytest subprocesses given what xdist gives a worker (``workerinput``, ``workeroutput``), and
the controller's hooks are called as xdist calls them; with xdist, a real run is checked too.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.testing import golden_plugin

pytest_plugins = ["pytester"]

SHARED_TEST = """
import os


def test_one(golden):
    golden.check({"from": "one"}, "shared")


def test_two(golden):
    golden.check({"from": "two"}, "shared")
"""

#: What xdist does to a worker's configuration before pytest configures it; the worker's
#: output is kept in a file, for the test to read as the controller would.
FAKE_WORKER = """
import json
import os

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    config.workerinput = json.loads(os.environ["WORKER_INPUT"])
    config.workeroutput = {}


def pytest_unconfigure(config):
    with open(os.environ["WORKER_OUTPUT"], "w") as output:
        json.dump(config.workeroutput, output)
"""


def test_a_file_checked_on_two_workers_is_written_by_the_first_and_compared_by_the_second(
    pytester, monkeypatch
):
    pytester.makeini("[pytest]\npipeline_plugin = true\n")
    pytester.makepyfile(test_shared=SHARED_TEST, fake_worker=FAKE_WORKER)
    controller = SimpleNamespace(config=pytester.parseconfigure("--update-golden"), workerinput={})
    golden_plugin.pytest_configure_node(controller)  # what the controller gives each worker
    monkeypatch.setenv("WORKER_INPUT", json.dumps(controller.workerinput))

    def worker(name: str, test: str) -> tuple[pytest.RunResult, dict[str, object]]:
        output = pytester.path / f"{name}.json"
        monkeypatch.setenv("WORKER_OUTPUT", str(output))
        run = pytester.runpytest_subprocess(
            "--update-golden", "-p", "fake_worker", "-p", "no:cacheprovider", "-k", test
        )
        return run, json.loads(output.read_text())

    first, first_output = worker("gw0", "test_one")
    second, second_output = worker("gw1", "test_two")

    first.assert_outcomes(passed=1)
    second.assert_outcomes(failed=1)
    second.stdout.fnmatch_lines(["*written earlier in this session by test_shared.py::test_one*"])
    shared = pytester.path / "golden" / "test_shared" / "shared.json"
    assert json.loads(shared.read_text()) == {"from": "one"}
    # Each worker tells the controller what it wrote.
    assert first_output["pipeline_golden_written"] == [str(shared)]
    assert second_output["pipeline_golden_written"] == []


class Reporter:
    """Stands in for pytest's terminal reporter: the lines written."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write_sep(self, sep: str, title: str) -> None:
        self.lines.append(f"{sep * 4} {title} {sep * 4}")

    def write_line(self, line: str) -> None:
        self.lines.append(line)


def test_the_controller_shares_one_folder_lists_what_every_worker_wrote_and_cleans_up(pytester):
    config = pytester.parseconfigure("-p", "pipeline.testing.fixtures", "--update-golden")
    gw0 = SimpleNamespace(config=config, workerinput={})
    gw1 = SimpleNamespace(config=config, workerinput={})
    golden_plugin.pytest_configure_node(gw0)
    golden_plugin.pytest_configure_node(gw1)
    folder = Path(gw0.workerinput["pipeline_golden_session"])
    assert folder.is_dir()
    assert gw1.workerinput == gw0.workerinput

    gw0.workeroutput = {"pipeline_golden_written": ["/p/golden/a.json"], "exitstatus": 0}
    gw1.workeroutput = {"pipeline_golden_written": ["/p/golden/b.json", "/p/golden/c.json"]}
    for node in (gw0, gw1, gw1):  # xdist tells of a worker twice when it is interrupted
        golden_plugin.pytest_testnodedown(node, None)
    golden_plugin.pytest_testnodedown(SimpleNamespace(config=config), "crashed")  # no output
    reporter = Reporter()
    golden_plugin.pytest_terminal_summary(reporter, config)

    assert reporter.lines == [
        "---- 3 golden files written ----",
        "  /p/golden/a.json",
        "  /p/golden/b.json",
        "  /p/golden/c.json",
    ]
    config._ensure_unconfigure()
    assert not folder.exists()


def test_without_update_golden_no_folder_is_made(pytester):
    config = pytester.parseconfigure("-p", "pipeline.testing.fixtures")
    node = SimpleNamespace(config=config, workerinput={})
    golden_plugin.pytest_configure_node(node)
    assert node.workerinput == {}


#: Eight tests, each with a file of its own and one file they all check, with eight results.
XDIST_TEST = "".join(
    f"""
def test_{n}(golden):
    golden.check({{"n": {n}}}, "own_{n}")
    golden.check({{"from": {n}}}, "shared")
"""
    for n in range(8)
)


@pytest.mark.skipif(importlib.util.find_spec("xdist") is None, reason="pytest-xdist not installed")
def test_with_xdist_a_file_is_written_once_and_every_file_written_is_listed(pytester):
    pytester.makeini("[pytest]\npipeline_plugin = true\n")
    pytester.makepyfile(test_xdist=XDIST_TEST)
    run = pytester.runpytest_subprocess(
        "-p", "xdist", "-n", "2", "-v", "--update-golden", "-p", "no:cacheprovider"
    )

    # The first check of shared.json passes, wherever it ran; the seven others differ from it.
    run.assert_outcomes(passed=1, failed=7)
    output = run.stdout.str()
    [first] = re.findall(r"PASSED test_xdist.py::test_(\d)", output)
    folder = pytester.path / "golden" / "test_xdist"
    assert json.loads((folder / "shared.json").read_text()) == {"from": int(first)}
    assert {"[gw0]", "[gw1]"} <= set(re.findall(r"\[gw\d\]", output))  # both workers ran tests
    run.stdout.fnmatch_lines(["*- 9 golden files written -*"])
    listed = {line.strip() for line in run.stdout.lines if line.startswith("  /")}
    assert listed == {str(path) for path in folder.iterdir()}

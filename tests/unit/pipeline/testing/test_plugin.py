"""The pytest plugin is inert until a project turns it on, and then gives its options, fixtures
and golden files.

Each project runs in a pytest subprocess (``runpytest_subprocess``): pytest loads the
``pytest11`` entry points of the installed package there as in any project, and the sockets
this unit-test folder disables stay usable for the project's own tests.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest_plugins = ["pytester"]

NETWORK_TEST = """
import socket


def test_opens_a_socket():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        assert probe.getsockname()[1] > 0
"""

OWN_OPTION_CONFTEST = """
import pytest


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true")  # the project's own option


@pytest.fixture
def golden(request):
    return "the project's own golden fixture"
"""

FIXTURES_TEST = """
import pytest


def test_fixtures(request):
    with pytest.raises(pytest.FixtureLookupError):
        request.getfixturevalue("pipeline_backend")
    assert request.getfixturevalue("golden") == "the project's own golden fixture"
    assert request.config.getoption("--update-golden") is True
"""


def test_the_entry_point_is_installed():
    from importlib.metadata import entry_points

    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("pipeline") == "event_pipeline_pytest"


def test_a_project_that_does_not_turn_the_plugin_on_runs_its_tests_unchanged(pytester):
    # Its tests/unit/ folder keeps its sockets, its own --update-golden option and golden
    # fixture are its own, and none of the plugin's fixtures appear.
    pytester.mkdir("tests")
    pytester.mkdir("tests/unit")
    pytester.makeconftest(OWN_OPTION_CONFTEST)
    (pytester.path / "tests" / "unit" / "test_network.py").write_text(NETWORK_TEST)
    (pytester.path / "tests" / "unit" / "test_fixtures.py").write_text(FIXTURES_TEST)

    result = pytester.runpytest_subprocess("--update-golden", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=2)
    assert "--pipeline-backend" not in pytester.runpytest_subprocess("--help").stdout.str()


def test_loading_the_plugin_switch_imports_no_module_of_the_pipeline_package():
    # pytest loads the switch at its start in every project. When it was a module of our
    # `pipeline` package, a project with a `pipeline` package of its own (first on its path)
    # had pytest fail to load the plugin ("No module named 'pipeline.testing'"), or its tests
    # import ours in its place.
    probe = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "(switch,) = [ep for ep in entry_points(group='pytest11') if ep.name == 'pipeline']\n"
        "switch.load()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pipeline'))\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )

    assert done.stdout.strip() == "[]"


BACKEND_TEST = """
import pytest


def test_golden_and_driver_backend(golden, pipeline_backend):
    assert pipeline_backend.kind == "driver"
    golden.check({"n": 1})


@pytest.mark.pipeline_backends("driver", "kafka")
def test_on_both(pipeline_backend):
    pass


@pytest.mark.pipeline_backends("driver")
def test_driver_only(pipeline_backend):
    pass
"""


EXPECTED_ITEMS = [
    "test_backend.py::test_golden_and_driver_backend[[]driver[]]",
    "test_backend.py::test_on_both[[]driver[]]",
    "test_backend.py::test_on_both[[]kafka[]]",
    "test_backend.py::test_driver_only[[]driver[]]",
]


def test_the_ini_option_turns_the_plugin_on(pytester):
    pytester.makeini("[pytest]\npipeline_plugin = true\n")
    pytester.makepyfile(test_backend=BACKEND_TEST)

    written = pytester.runpytest_subprocess(
        "--update-golden", "-k", "golden", "-p", "no:cacheprovider"
    )
    collected = pytester.runpytest_subprocess("--co", "-q", "-p", "no:cacheprovider")
    on_kafka = pytester.runpytest_subprocess(
        "-rs", "-k", "driver_only", "--pipeline-backend", "kafka", "-p", "no:cacheprovider"
    )

    written.assert_outcomes(passed=1)
    written.stdout.fnmatch_lines(["*1 golden file written*"])
    # Named after the test, not its backend (one file for both: see below).
    golden = pytester.path / "golden" / "test_backend" / "test_golden_and_driver_backend.json"
    assert golden.read_text() == '{\n  "n": 1\n}\n'
    collected.stdout.fnmatch_lines(EXPECTED_ITEMS)
    # A test that declared the driver only is skipped, not run, on the chosen kafka backend.
    on_kafka.assert_outcomes(skipped=1)
    on_kafka.stdout.fnmatch_lines(["*runs on driver only, not on --pipeline-backend kafka*"])


def test_dash_p_turns_the_plugin_on_and_the_backend_option_picks_the_backend(pytester):
    pytester.makepyfile(test_backend=BACKEND_TEST)
    args = ("-p", "pipeline.testing.fixtures", "-p", "no:cacheprovider", "--co", "-q")

    collected = pytester.runpytest_subprocess(*args)
    chosen = pytester.runpytest_subprocess(*args, "--pipeline-backend", "kafka")

    collected.stdout.fnmatch_lines(EXPECTED_ITEMS)
    chosen.stdout.fnmatch_lines(
        [
            "test_backend.py::test_golden_and_driver_backend[[]kafka[]]",
            "test_backend.py::test_on_both[[]kafka[]]",
            "test_backend.py::test_driver_only[[]kafka[]]",
        ]
    )
    assert "[driver]" not in chosen.stdout.str()


def test_a_golden_difference_fails_the_test_with_its_diff(pytester, monkeypatch):
    pytester.makeini("[pytest]\npipeline_plugin = true\n")
    pytester.makepyfile(
        test_outputs="""
import os


def test_outputs(golden):
    golden.check({"status": os.environ.get("STATUS", "completed")})
"""
    )
    assert pytester.runpytest_subprocess("--update-golden").ret == 0

    same = pytester.runpytest_subprocess()
    monkeypatch.setenv("STATUS", "compensated")
    changed = pytester.runpytest_subprocess()

    same.assert_outcomes(passed=1)
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(
        ['*-  "status": "completed"', '*+  "status": "compensated"', "*--update-golden*"]
    )


#: Stands in for the plugin's fixture: the test's backend as it is parametrized, nothing
#: started (the kafka one would need the stack).
BACKEND_KIND_CONFTEST = """
import pytest


@pytest.fixture
def pipeline_backend(request):
    return request.param
"""

BOTH_BACKENDS_TEST = """
import os

import pytest


@pytest.mark.pipeline_backends("driver", "kafka")
def test_same(pipeline_backend, golden):
    golden.check({"result": 1})


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.pipeline_backends("driver", "kafka")
def test_each_n(pipeline_backend, golden, n):
    golden.check({"n": n})


@pytest.mark.pipeline_backends("driver", "kafka")
def test_differs(pipeline_backend, golden):
    golden.check({"on": pipeline_backend if os.environ.get("DIFFER") else "either"})
"""


def test_one_test_on_both_backends_compares_with_one_golden_file(pytester, monkeypatch):
    pytester.makeini("[pytest]\npipeline_plugin = true\n")
    pytester.makeconftest(BACKEND_KIND_CONFTEST)
    pytester.makepyfile(test_both=BOTH_BACKENDS_TEST)

    written = pytester.runpytest_subprocess("--update-golden", "-p", "no:cacheprovider")
    compared = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    monkeypatch.setenv("DIFFER", "1")
    differs = pytester.runpytest_subprocess(
        "--update-golden", "-k", "differs", "-p", "no:cacheprovider"
    )

    written.assert_outcomes(passed=8)
    folder = pytester.path / "golden" / "test_both"
    # The backend is not in the name; other parameters are.
    assert sorted(p.name for p in folder.iterdir()) == [
        "test_differs.json",
        "test_each_n_1_.json",
        "test_each_n_2_.json",
        "test_same.json",
    ]
    compared.assert_outcomes(passed=8)
    # Rewriting, the second backend's different result fails; it does not overwrite the first.
    differs.assert_outcomes(passed=1, failed=1)
    differs.stdout.fnmatch_lines(
        ["*written earlier in this session by test_both.py::test_differs[[]driver[]]*"]
    )
    assert (folder / "test_differs.json").read_text() == '{\n  "on": "driver"\n}\n'


CLASSES_TEST = """
class TestA:
    def test_same(self, golden):
        golden.check({"class": "A"})


class TestB:
    def test_same(self, golden):
        golden.check({"class": "B"})

    class TestInner:
        def test_same(self, golden):
            golden.check({"class": "B.Inner"}, "named")


def test_same(golden):
    golden.check({"class": None})
"""


def test_tests_of_one_name_in_two_classes_have_golden_files_of_their_own(pytester):
    pytester.makeini("[pytest]\npipeline_plugin = true\n")
    pytester.makepyfile(test_classes=CLASSES_TEST)

    written = pytester.runpytest_subprocess("--update-golden", "-p", "no:cacheprovider")
    compared = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    written.assert_outcomes(passed=4)
    compared.assert_outcomes(passed=4)
    folder = pytester.path / "golden" / "test_classes"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*.json")) == [
        "TestA/test_same.json",
        "TestB/TestInner/named.json",
        "TestB/test_same.json",
        "test_same.json",  # a test outside a class keeps its place
    ]
    assert (folder / "TestB" / "test_same.json").read_text() == '{\n  "class": "B"\n}\n'


FAILING_HELPERS_TEST = """
def test_golden_differs(golden):
    golden.check({"n": 2})


def test_bad_recording(replay_into_driver, tmp_path):
    from pipeline.processing import Processor, ProcessorTestDriver

    bad = tmp_path / "bad.ndjson"
    bad.write_text("not a recorded message\\n")
    replay_into_driver(ProcessorTestDriver(Processor("p")), str(bad))
"""


def test_a_failing_helper_reports_the_test_and_the_reason_not_the_helpers_source(pytester):
    pytester.makeini("[pytest]\npipeline_plugin = true\n")
    pytester.makepyfile(test_helpers=FAILING_HELPERS_TEST)
    (pytester.path / "golden" / "test_helpers").mkdir(parents=True)
    (pytester.path / "golden" / "test_helpers" / "test_golden_differs.json").write_text(
        '{\n  "n": 1\n}\n'
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(failed=2)
    output = result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*the outputs differ from*", "*bad.ndjson:1: not a recorded message*"]
    )
    # The helpers' own lines (their bodies, where they raise) are not shown.
    assert "def check(" not in output and "def _compare(" not in output
    assert "def _messages(" not in output and "read_recording(path" not in output


MISUSE_TEST = """
import pytest


@pytest.mark.pipeline_backends("drivr")
def test_misspelt_backend(pipeline_backend):
    pass
"""

WRONG_PROCESSOR_TEST = """
def test_wrong_processor(pipeline_backend):
    pipeline_backend(["os:nope"])


def test_unreadable_setting(pipeline_backend):
    pipeline_backend(
        ["tests.unit.pipeline.testing.counting:processor"],
        env={"PIPELINE_PROCESSING__RETRY__MAX_ATTEMPTS": "abc"},
    )
"""


def test_a_misspelt_backend_in_the_marker_is_one_line_without_the_plugins_frames(pytester):
    pytester.makeini("[pytest]\npipeline_plugin = true\n")
    pytester.makepyfile(test_misuse=MISUSE_TEST)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    assert result.ret == pytest.ExitCode.INTERRUPTED  # an error while collecting
    result.stdout.fnmatch_lines(
        ["*test_misuse.py::test_misspelt_backend: pipeline_backends takes some of driver, "
         "kafka, got drivr"]
    )  # fmt: skip
    assert "fixtures.py" not in result.stdout.str()


def test_a_processor_that_does_not_load_or_a_bad_setting_fails_its_test_with_one_line(pytester):
    pytester.makeini("[pytest]\npipeline_plugin = true\n")
    pytester.makepyfile(test_wrong=WRONG_PROCESSOR_TEST)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*pipeline_backend: os has no nope*",
            "*pipeline_backend: invalid setting processing.retry.max_attempts: Input should be*",
        ]
    )
    output = result.stdout.str()
    for frames in ("fixtures.py", "load_attribute", "During handling", "pydantic_settings"):
        assert frames not in output, frames

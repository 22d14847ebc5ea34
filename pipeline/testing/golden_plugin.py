"""The pytest side of golden files: the ``golden`` fixture, ``--update-golden`` and the list of
files written at the end of the session (registered by pipeline/testing/fixtures.py).

A file checked twice in one session is written once (pipeline/testing/golden_session.py),
also when pytest-xdist runs the tests in several processes: the controller makes a folder for
the session's workers to share, hands it to each (``workerinput``) and removes it at the end;
each worker sends back the files it wrote (``workeroutput``), and the controller lists them
all. The xdist hooks are optional: without xdist they are never called, and nothing here
imports it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from pipeline.plurals import counted
from pipeline.testing.golden import Golden
from pipeline.testing.golden_session import (
    GoldenSession,
    LocalGoldenSession,
    SharedGoldenSession,
)

__all__ = ["golden"]

#: The golden files this process wrote, listed at the end of the session (on the xdist
#: controller: the files every worker wrote).
_WRITTEN = pytest.StashKey[list[Path]]()
#: The golden files checked with --update-golden in this session, and what the first check of
#: each gave: a second check of one file compares with it instead of overwriting it.
_SESSION = pytest.StashKey[GoldenSession]()
#: On the xdist controller: the folder its workers share as their session (made on demand).
_SHARED_FOLDER = pytest.StashKey[Path]()
#: The name of that folder in a worker's ``workerinput``, and of the files a worker wrote in
#: its ``workeroutput``.
_WORKER_FOLDER = "pipeline_golden_session"
_WORKER_WRITTEN = "pipeline_golden_written"
#: The fixture (and parameter) that runs a test on a backend (see fixtures.py).
_BACKEND_PARAM = "pipeline_backend"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("pipeline").addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="write the golden files the golden fixture compares with, instead of comparing.",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_WRITTEN] = []
    # An xdist worker has workerinput; it holds the folder when --update-golden is given.
    shared = getattr(config, "workerinput", {}).get(_WORKER_FOLDER)
    config.stash[_SESSION] = (
        LocalGoldenSession() if shared is None else SharedGoldenSession(Path(shared))
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_SHARED_FOLDER, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """On the xdist controller, for each worker: the folder of the session they share."""
    config: pytest.Config = node.config
    if not config.getoption("--update-golden"):
        return
    folder = config.stash.get(_SHARED_FOLDER, None)
    if folder is None:
        folder = config.stash[_SHARED_FOLDER] = Path(tempfile.mkdtemp(prefix="pipeline-golden-"))
    node.workerinput[_WORKER_FOLDER] = str(folder)


def pytest_sessionfinish(session: pytest.Session) -> None:
    # On an xdist worker: what it wrote goes to the controller, which lists it (a worker's own
    # summary is never shown).
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output[_WORKER_WRITTEN] = [str(path) for path in session.config.stash[_WRITTEN]]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """On the xdist controller: a worker finished; the files it wrote join the list."""
    # A worker that crashed sent no output: what it wrote is on disk, but not listed. Taken
    # out, as xdist calls this again for a worker that finished and then was interrupted.
    written = getattr(node, "workeroutput", {}).pop(_WORKER_WRITTEN, [])
    node.config.stash[_WRITTEN].extend(Path(path) for path in written)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    written = config.stash.get(_WRITTEN, [])
    if written:
        terminalreporter.write_sep("-", f"{counted(len(written), 'golden file')} written")
        for path in written:
            terminalreporter.write_line(f"  {path}")


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Golden:
    """Compares outputs with golden files: ``golden.check(data, name=None)`` (see
    pipeline/testing/golden.py). Files go to ``golden/<test module>/`` beside the test
    (``golden/<test module>/<class>/`` for a test in a class), named after the test and its
    parameters but the backend (see :func:`_golden_name`)."""
    test_file = Path(str(request.node.path))
    checker = Golden(
        _golden_folder(request.node, test_file),
        _golden_name(request.node),
        base=test_file.parent,
        update=request.config.getoption("--update-golden"),
        session=request.config.stash[_SESSION],
        test=request.node.nodeid,
    )
    written = request.config.stash[_WRITTEN]
    request.addfinalizer(lambda: written.extend(checker.written))
    return checker


def _golden_folder(node: pytest.Item, test_file: Path) -> Path:
    """Where a test's golden files go: ``golden/<test module>/`` beside it, and a folder per
    class it is in (``golden/<module>/TestA/``): ``TestA.test_same`` and ``TestB.test_same``
    of one module are different tests, with files of their own."""
    classes = [_safe(item.name) for item in node.listchain() if isinstance(item, pytest.Class)]
    return test_file.parent.joinpath("golden", test_file.stem, *classes)


def _safe(name: str) -> str:
    """``name`` with what a file name should not hold (brackets, slashes, spaces) as ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _golden_name(node: pytest.Item) -> str:
    """The default golden file name of a test: its name with its parameters' ids, but not the
    backend's (``test_x[driver]`` and ``test_x[kafka]`` -> ``test_x``; ``test_x[2-kafka]`` ->
    ``test_x_2_``): running one test body on both backends is to get one result, so both
    compare with one file. Other parameters keep their files apart."""
    name = node.name
    callspec = getattr(node, "callspec", None)
    if callspec is not None and _BACKEND_PARAM in callspec.params:
        original = getattr(node, "originalname", name)
        kind = str(callspec.params[_BACKEND_PARAM])
        ids = callspec.id
        # The backend's id is the last (fixtures.py's pytest_generate_tests is trylast);
        # pytest joins the ids of a test's parametrizations with "-".
        if ids == kind:
            name = original
        elif ids.endswith(f"-{kind}"):
            name = f"{original}[{ids[: -len(kind) - 1]}]"
    return _safe(name)

"""bench/scale_out.py's contenders: the files of each are its own."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture
def scale_out(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))  # the bench scripts import their siblings by name
    return importlib.import_module("bench.scale_out")


# Importing the bench imports urllib3 (through elasticsearch), which probes IPv6 with a socket.
@pytest.mark.filterwarnings("ignore:A test tried to use socket")
def test_every_contender_of_a_full_run_has_its_own_reports_and_logs(
    scale_out: ModuleType, tmp_path: Path
) -> None:
    # The full profile runs every kind and process count with a 2 ms handler and with none,
    # at once, in one work folder: two poll loops writing one report replaced each other's.
    contenders = [
        scale_out.Contender(kind, count, sleep_ms, "topic", "group", {}, tmp_path)
        for sleep_ms in (2.0, 0.0)
        for kind in ("runtime", "poll")
        for count in scale_out.PROCESS_COUNTS
    ]
    paths = [
        path
        for contender in contenders
        for n in range(contender.count)
        for path in (contender.report_path(n), contender.log_path(n))
    ]
    assert len(set(paths)) == len(paths)
    assert all(path.parent == tmp_path for path in paths)

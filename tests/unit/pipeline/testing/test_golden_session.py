"""A golden file checked twice in one session is written once, also when the session is several
processes (pytest-xdist's workers) sharing a folder."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from pipeline.testing.golden import Golden, GoldenMismatch
from pipeline.testing.golden_session import FirstCheck, LocalGoldenSession, SharedGoldenSession


@pytest.mark.parametrize("kind", ["local", "shared"])
def test_the_first_check_of_a_file_is_recorded_and_every_later_one_is_told_of_it(tmp_path, kind):
    session = LocalGoldenSession() if kind == "local" else SharedGoldenSession(tmp_path)
    golden = tmp_path / "golden" / "t.json"
    assert session.first_check(golden, "t[driver]", "1\n") is None
    assert session.first_check(golden, "t[kafka]", "2\n") == FirstCheck("t[driver]", "1\n")
    # The same file by another path is the same file.
    same = tmp_path / "golden" / ".." / "golden" / "t.json"
    assert session.first_check(same, "u", "3\n") == FirstCheck("t[driver]", "1\n")
    assert session.first_check(tmp_path / "other.json", "u", "3\n") is None


def test_two_workers_sharing_a_folder_write_a_file_once_and_compare_with_it(tmp_path):
    shared = tmp_path / "session"
    shared.mkdir()
    one, two = SharedGoldenSession(shared), SharedGoldenSession(shared)  # no memory shared

    def golden(session: SharedGoldenSession, test: str) -> Golden:
        return Golden(tmp_path, "t", base=tmp_path, update=True, session=session, test=test)

    first = golden(one, "test_x[driver]")
    first.check({"n": 1})
    same = golden(two, "test_x[kafka]")
    same.check({"n": 1})  # the same result: fine, and not written again
    assert (first.written, same.written) == ([tmp_path / "t.json"], [])

    with pytest.raises(GoldenMismatch) as refused:
        golden(two, "test_y").check({"n": 2})
    assert "written earlier in this session by test_x[driver]" in str(refused.value)
    assert "give the checks different names" in str(refused.value)
    assert json.loads((tmp_path / "t.json").read_text()) == {"n": 1}
    assert [path.name for path in shared.iterdir() if path.name.startswith(".")] == []


def test_a_worker_compares_with_the_first_result_even_before_its_file_is_written(tmp_path):
    # Another worker checked first and is still writing the file (here: has not yet).
    shared = tmp_path / "session"
    shared.mkdir()
    SharedGoldenSession(shared).first_check(tmp_path / "t.json", "test_x", '{\n  "n": 1\n}\n')
    later = Golden(tmp_path, "t", base=tmp_path, update=True, session=SharedGoldenSession(shared))
    later.check({"n": 1})
    with pytest.raises(GoldenMismatch, match="written earlier in this session by test_x"):
        later.check({"n": 2}, "t")
    assert not (tmp_path / "t.json").exists()


def test_of_many_threads_checking_one_file_at_once_exactly_one_is_first(tmp_path):
    golden = tmp_path / "t.json"
    start = threading.Barrier(16)
    firsts: list[str] = []

    def check(number: int) -> None:
        session = SharedGoldenSession(tmp_path)
        start.wait()
        if session.first_check(golden, f"test_{number}", f"{number}\n") is None:
            firsts.append(f"test_{number}")

    threads = [threading.Thread(target=check, args=(number,)) for number in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    [first] = firsts
    assert SharedGoldenSession(tmp_path).first_check(golden, "last", "x") == FirstCheck(
        first, f"{first.removeprefix('test_')}\n"
    )


CHECK_IN_A_PROCESS = """
import sys
from pathlib import Path

from pipeline.testing.golden_session import SharedGoldenSession

shared, golden, test = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
first = SharedGoldenSession(shared).first_check(golden, test, test + "\\n")
print("first" if first is None else first.test)
"""


def test_of_processes_checking_one_file_at_once_exactly_one_is_first(tmp_path):
    golden = tmp_path / "t.json"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CHECK_IN_A_PROCESS, str(tmp_path), str(golden), f"gw{n}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(6)
    ]
    said = {
        f"gw{n}": process.communicate(timeout=60)[0].strip() for n, process in enumerate(processes)
    }

    [first] = [worker for worker, answer in said.items() if answer == "first"]
    assert {answer for worker, answer in said.items() if worker != first} == {first}

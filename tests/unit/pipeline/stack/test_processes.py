import dataclasses
import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from pipeline.stack import processes
from pipeline.stack.preflight import StackError


def _sleeper(tmp_path, name="sleeper"):
    # A parent with a child, like runuser -> java launcher -> java server.
    script = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    return processes.spawn(
        name, [sys.executable, "-c", script], tmp_path / f"{name}.log", "1.0", "127.0.0.1:1"
    )


def test_stop_ends_the_process_and_its_children(tmp_path):
    record = _sleeper(tmp_path)
    process = processes.find(record)
    assert process is not None
    deadline = time.monotonic() + 10
    while not process.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    children = process.children(recursive=True)
    assert children, "the child did not start"
    assert processes.stop(record, timeout_s=5) is True
    assert processes.find(record) is None
    assert not any(
        child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children
    )


def test_the_server_a_launcher_started_is_adopted_and_stopped_once_the_launcher_is_gone(
    tmp_path,
):
    # Elasticsearch (as root: runuser -> launcher -> server): with the outer process recorded,
    # a kill of it left the server running, out of reach of `stack down`.
    pid_file = tmp_path / "server.pid"
    script = (
        "import subprocess, sys, time; server = subprocess.Popen(['sleep', '300']); "
        f"open({str(pid_file)!r}, 'w').write(str(server.pid)); time.sleep(300)"
    )
    launcher = processes.spawn(
        "server", [sys.executable, "-c", script], tmp_path / "s.log", "1.0", "127.0.0.1:1"
    )
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        server = processes.adopt(launcher, pid_file)
        assert server.pid == int(pid_file.read_text()) != launcher.pid
        os.kill(launcher.pid, 9)  # the launcher killed: the server it started runs on

        assert processes.stop(server, timeout_s=5) is True
        assert processes.find(server) is None
    finally:
        processes.stop(launcher, timeout_s=5)


def test_a_pid_file_naming_no_child_of_the_record_changes_nothing(tmp_path):
    record = _sleeper(tmp_path)
    try:
        (tmp_path / "other.pid").write_text(str(os.getpid()))  # running, but no child of it
        assert processes.adopt(record, tmp_path / "other.pid") == record
        assert processes.adopt(record, tmp_path / "missing.pid") == record
    finally:
        processes.stop(record, timeout_s=5)


def test_a_record_whose_pid_was_reused_is_not_ours(tmp_path):
    record = _sleeper(tmp_path)
    try:
        assert record.start_ticks is not None
        impostor = dataclasses.replace(record, start_ticks=record.start_ticks - 1)
        assert processes.find(impostor) is None
        assert processes.stop(impostor) is False
        before_ticks = dataclasses.replace(record, start_ticks=None, create_time=1.0)
        assert processes.find(before_ticks) is None
        assert processes.find(record) is not None
    finally:
        processes.stop(record, timeout_s=5)


def test_a_record_is_still_ours_after_the_wall_clock_was_stepped(tmp_path):
    # psutil's create_time moves with the wall clock (boot time = now - uptime); the kernel's
    # start ticks do not.
    record = _sleeper(tmp_path)
    try:
        stepped = dataclasses.replace(record, create_time=record.create_time - 30)
        assert processes.find(stepped) is not None
        assert processes.stop(stepped, timeout_s=5) is True
        assert processes.find(record) is None
    finally:
        processes.stop(record, timeout_s=5)


def test_a_record_written_before_start_ticks_matches_by_create_time(tmp_path):
    record = _sleeper(tmp_path)
    try:
        old = dataclasses.replace(record, start_ticks=None)
        assert processes.find(old) is not None
    finally:
        processes.stop(record, timeout_s=5)


def test_start_ticks_are_read_past_a_name_with_spaces_and_parentheses(tmp_path):
    # The kernel shows the first 15 characters of the name in parentheses, as they are.
    script = "import time; time.sleep(300)"
    odd = tmp_path / "a) b (c"
    odd.symlink_to(sys.executable)
    child = subprocess.Popen([str(odd), "-c", script])
    try:
        assert psutil.Process(child.pid).name() == "a) b (c"
        ticks = processes.start_ticks(child.pid)
        expected = psutil.Process(child.pid).create_time() - psutil.boot_time()
        assert ticks is not None
        assert abs(ticks / os.sysconf("SC_CLK_TCK") - expected) < 1.0
    finally:
        child.kill()
        child.wait(10)
    assert processes.start_ticks(child.pid) is None


def test_records_round_trip_through_their_file(tmp_path):
    record = processes.ProcessRecord(
        "kafka", 42, 1700000000.5, "3.9.1", "127.0.0.1:9092", "/l", start_ticks=123456
    )
    path = tmp_path / "state" / "processes.json"
    processes.save_records(path, {"kafka": record})
    assert processes.load_records(path) == {"kafka": record}
    # A file written before start ticks were recorded still loads.
    old = {"kafka": {k: v for k, v in dataclasses.asdict(record).items() if k != "start_ticks"}}
    path.write_text(json.dumps(old))
    assert processes.load_records(path) == {"kafka": dataclasses.replace(record, start_ticks=None)}
    assert processes.load_records(tmp_path / "missing.json") == {}


def test_a_damaged_records_file_is_reported(tmp_path):
    path = tmp_path / "processes.json"
    path.write_text("{not json")
    with pytest.raises(StackError, match="is damaged"):
        processes.load_records(path)


def test_a_process_that_ended_but_awaits_its_parents_reaping_counts_as_stopped(
    tmp_path, monkeypatch
):
    # `stack down` in one process, the stack started by another that has not reaped it yet
    # (a test's own `up`): the ended server is a zombie, and must not be waited for until the
    # timeout and then killed in vain.
    script = (
        "import subprocess, sys, time; child = subprocess.Popen(['sleep', '300']); "
        "print(child.pid, flush=True); sys.stdin.read()"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        record = processes.ProcessRecord(
            "sleeper", pid, psutil.Process(pid).create_time(), "1.0", "127.0.0.1:1", "/l"
        )
        killed = []
        monkeypatch.setattr(psutil.Process, "kill", lambda self: killed.append(self.pid))
        assert processes.stop(record, timeout_s=5) is True
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert killed == [], "an ended process was still taken as running"
    finally:
        parent.kill()
        parent.wait(10)

"""The stack's lock: one ``up`` or ``down`` at a time per stack home, and a second one says
what it waits for."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
from pathlib import Path

import pytest

from pipeline.stack.preflight import StackError
from pipeline.stack.stack_lock import held_lock


def test_an_uncontended_lock_is_taken_at_once_in_silence_and_names_its_holder(
    tmp_path: Path,
) -> None:
    said: list[str] = []

    with held_lock(tmp_path / "state", tmp_path, said.append):
        assert (tmp_path / "state" / "stack.lock").read_text() == str(os.getpid())

    assert said == []


def hold(lock_file: Path, pid_written: int) -> int:
    """Take the lock on a descriptor of its own (as another process would), naming a pid."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.write(fd, str(pid_written).encode())
    return fd


def wait_behind(holder_pid: int, tmp_path: Path) -> str:
    """What a second command says while ``holder_pid`` is named in the held lock; it gets the
    lock once that is released."""
    fd = hold(tmp_path / "state" / "stack.lock", holder_pid)
    said: list[str] = []
    spoke, entered = threading.Event(), threading.Event()

    def say(text: str) -> None:
        said.append(text)
        spoke.set()

    def second() -> None:
        with held_lock(tmp_path / "state", tmp_path, say):
            entered.set()

    thread = threading.Thread(target=second)
    thread.start()
    try:
        assert spoke.wait(10)
        assert not entered.is_set()  # it waits
    finally:
        os.close(fd)  # the first one finishes
    thread.join(10)
    assert entered.is_set()
    assert len(said) == 1
    return said[0]


def test_a_second_command_says_it_waits_for_the_running_one_and_which_process_that_is(
    tmp_path: Path,
) -> None:
    said = wait_behind(os.getpid(), tmp_path)

    assert said == (
        f"another `pipeline stack` command (pid {os.getpid()}) is starting or stopping the "
        f"stack in {tmp_path}; waiting for it to finish ..."
    )


def test_the_pid_of_a_process_that_is_gone_is_not_named(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()

    said = wait_behind(gone.pid, tmp_path)

    assert said.startswith("another `pipeline stack` command is starting or stopping")


def test_a_state_folder_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")

    with (
        pytest.raises(StackError, match=f"cannot use the stack folder {tmp_path}"),
        held_lock(tmp_path / "file" / "state", tmp_path, print),
    ):
        pass

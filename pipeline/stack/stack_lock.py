"""One ``pipeline stack up`` or ``down`` at a time per stack home (parallel test runs share one
stack): an exclusive lock on ``stack.lock`` in its state folder, which names the process that
holds it, so a second command says what it waits for instead of waiting in silence."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from pipeline.stack.preflight import StackError

__all__ = ["held_lock"]


@contextmanager
def held_lock(state_dir: Path, home: Path, say: Callable[[str], None]) -> Iterator[None]:
    """Hold the stack's lock; while another process holds it, ``say`` once what is waited for,
    then wait."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        handle = (state_dir / "stack.lock").open("a+")  # "a+": the holder's pid stays readable
    except OSError as error:
        raise StackError(f"cannot use the stack folder {home}: {error}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(
                f"another `pipeline stack` command{_holder(handle)} is starting or stopping the "
                f"stack in {home}; waiting for it to finish ..."
            )
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            with contextlib.suppress(OSError):  # the name is a courtesy; the lock is what counts
                handle.truncate(0)
                handle.write(str(os.getpid()))
                handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _holder(handle: IO[str]) -> str:
    """`` (pid N)`` of the process that wrote its pid in the lock file, if it still runs."""
    try:
        handle.seek(0)
        pid = int(handle.read().strip())
    except (OSError, ValueError):
        return ""
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass  # another user's process (the stack's own user): it runs
    except OSError:
        return ""  # gone: the pid of an earlier holder, before the holder wrote its own
    return f" (pid {pid})"

"""Background processes we start, recorded by id so we stop only our own."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from pipeline.stack.preflight import StackError


@dataclass(frozen=True)
class ProcessRecord:
    """A started process: its pid plus its start, so a reused pid is never mistaken for it.

    ``start_ticks`` is the kernel's own record of the start (clock ticks since boot, Linux's
    ``/proc/PID/stat``), which never changes; ``create_time`` (seconds since the epoch) is
    psutil's, computed from the boot time, which moves when the wall clock is stepped (seen on
    virtual machines: a running server's record no longer matched, so ``stack down`` left it
    running). The ticks decide where there are any; records written before them, and systems
    without ``/proc``, compare ``create_time`` within a second.
    """

    name: str
    pid: int
    create_time: float
    version: str
    address: str
    log: str
    start_ticks: int | None = None


def spawn(name: str, command: list[str], log: Path, version: str, address: str) -> ProcessRecord:
    """Start ``command`` in its own session, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as error:
            raise StackError(f"cannot start {name}: {error}") from error
    return ProcessRecord(
        name=name,
        pid=process.pid,
        create_time=psutil.Process(process.pid).create_time(),
        version=version,
        address=address,
        log=str(log),
        start_ticks=start_ticks(process.pid),
    )


def adopt(record: ProcessRecord, pid_file: Path) -> ProcessRecord:
    """The record of the server whose pid ``pid_file`` holds, when it runs under ``record``'s
    process (a launcher, or ``runuser`` in front of one); else ``record`` as it is.

    Elasticsearch runs as a launcher that starts the server JVM (and as root, ``runuser`` in
    front of that): a record of the outer process left the server running, out of reach of
    ``stack down``, once the outer one was killed. The server itself is what must be stopped.
    """
    try:
        pid = int(pid_file.read_text().strip())
        outer = find(record)
        if outer is None or pid not in {child.pid for child in outer.children(recursive=True)}:
            return record
        server = psutil.Process(pid)
        return ProcessRecord(
            name=record.name,
            pid=pid,
            create_time=server.create_time(),
            version=record.version,
            address=record.address,
            log=record.log,
            start_ticks=start_ticks(pid),
        )
    except (OSError, ValueError, psutil.Error):
        return record


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (field 22 of ``/proc/PID/stat``);
    None without ``/proc`` or without such a process.

    Read by hand: psutil turns these ticks into ``create_time`` and keeps the ticks private.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The name (field 2) is in parentheses and may hold spaces or parentheses: the fields after
    # it start at the last ')'; the start time is the 20th of them.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def find(record: ProcessRecord) -> psutil.Process | None:
    """The running process of a record, or None if it ended (or its pid now belongs to another)."""
    try:
        process = psutil.Process(record.pid)
        if not _same_start(record, process):
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except psutil.NoSuchProcess:
        return None


def _same_start(record: ProcessRecord, process: psutil.Process) -> bool:
    if record.start_ticks is not None:
        ticks = start_ticks(record.pid)
        if ticks is not None:
            return ticks == record.start_ticks
    return abs(process.create_time() - record.create_time) <= 1.0


def exit_code(record: ProcessRecord) -> int | None:
    """Reap a child that ended; its exit code when it was ours and it ended, else None."""
    try:
        process = psutil.Process(record.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return process.wait(timeout=0)
    except (psutil.NoSuchProcess, psutil.TimeoutExpired, ChildProcessError):
        return None
    return None


def stop(record: ProcessRecord, timeout_s: float = 30.0) -> bool:
    """Stop the process and its children: SIGTERM, then SIGKILL after ``timeout_s``.

    Returns whether anything was running.
    """
    process = find(record)
    if process is None:
        return False
    try:
        family = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    alive = _wait_until_ended(family, timeout_s)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    _wait_until_ended(alive, 10)
    return True


def _wait_until_ended(family: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """The members still running after at most ``timeout_s``; our own children are reaped.

    A zombie has ended: it only waits for its parent to reap it. When that parent is another
    process (the one that ran ``up``, still running), psutil.wait_procs would count it as
    alive until the timeout, then kill it in vain, and wait again.
    """
    deadline = time.monotonic() + timeout_s
    alive = family
    while True:
        _, alive = psutil.wait_procs(alive, timeout=0.1)
        alive = [member for member in alive if not _ended(member)]
        if not alive or time.monotonic() >= deadline:
            return alive


def _ended(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def load_records(path: Path) -> dict[str, ProcessRecord]:
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {name: ProcessRecord(**fields) for name, fields in raw.items()}
    except (ValueError, TypeError) as error:
        raise StackError(
            f"{path} is damaged ({error}); remove it after stopping the stack by hand"
        ) from error


def save_records(path: Path, records: dict[str, ProcessRecord]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({name: asdict(r) for name, r in records.items()}, indent=2))
    temporary.replace(path)

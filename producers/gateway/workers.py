"""``pipeline gateway --workers N``: N gateway processes serving one port.

Each worker is a fresh interpreter running the gateway with ``SO_REUSEPORT`` on its listening
socket, so the kernel spreads the connections among them (Linux). Fresh processes rather than
``fork``: a forked child would inherit librdkafka's threads and an event loop in an unknown
state; each worker builds its own producer instead. The workers share what must be shared
through the database: the API keys and the Idempotency-Key store (PostgreSQL).

The parent only supervises:

1. before starting any worker, it binds the workers' address once as they will: a port taken
   is one error line and exit code 2, not one line per worker;
2. it starts the workers in sessions of their own, so a Ctrl-C at the terminal reaches the
   parent alone;
3. it forwards every SIGINT or SIGTERM it gets to every worker as SIGTERM: the first stops them
   cleanly (each waits for its deliveries), a second stops them at once, as for one gateway;
4. when a worker stops by itself (it could not listen, it failed, it was killed), the parent
   says which and how, in one line, and stops the others (once: cleanly); a supervisor
   restarts the whole gateway;
5. its exit code is that first worker's (a shell's: 128 + N when killed by signal N), else
   the highest of the workers' (0 when all stopped cleanly); a worker killed by the parent's
   own SIGTERM before it served (still starting: nothing to deliver) counts as 0, so the
   parent's stopping never decides the code;
6. it gives them a folder of its own for their metrics (:mod:`producers.gateway.metrics`), so
   that ``/metrics`` shows the sum of all of them, and removes it at the end. The folder's
   name carries the parent's pid, and a parent that was killed (SIGKILL: no cleanup) leaves
   its folder behind: each parent removes, when it starts, those of parents that are gone;
7. the first worker alone gets ``first_args`` (``--announce`` for the gateway): one worker
   says what is said once per gateway at its start, not every worker.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from types import FrameType

import psutil

from pipeline.errors import PipelineError
from producers.gateway.metrics import MULTIPROCESS_DIR_VARIABLE

__all__ = [
    "METRICS_FOLDER_PREFIX",
    "check_address",
    "exit_code",
    "how_it_stopped",
    "run_workers",
    "supervisor_exit_code",
]

_POLL_S = 0.2
#: The metrics folder of a parent: this, its pid, ``-`` and a random suffix (in the temp dir).
METRICS_FOLDER_PREFIX = "pipeline-gateway-metrics-"
_OWNED_FOLDER = re.compile(re.escape(METRICS_FOLDER_PREFIX) + r"(\d+)-")


def run_workers(
    argv: Sequence[str],
    count: int,
    *,
    address: tuple[str, int] | None = None,
    say: Callable[[str], None] = print,
    first_args: Sequence[str] = (),
) -> int:
    """Run ``count`` processes of ``argv`` until they have all exited; the exit code of the
    first that stopped by itself, else their highest (see the module's docstring).
    ``address``: the host and port the workers listen on, checked first; ``first_args``:
    arguments added to the first worker's ``argv`` only."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count!r}")
    if address is not None:
        check_address(*address)
    workers: list[subprocess.Popen[bytes]] = []
    signaled: set[int] = set()  # the workers the parent sent SIGTERM to (their indexes)
    first: int | None = None  # the first worker that stopped by itself
    stopping = False

    def stop_all() -> None:
        for number, worker in enumerate(workers):
            if worker.poll() is None:
                signaled.add(number)
                worker.send_signal(signal.SIGTERM)

    def forward(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        stop_all()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    remove_orphaned_metrics_folders(Path(tempfile.gettempdir()))
    metrics = tempfile.TemporaryDirectory(prefix=f"{METRICS_FOLDER_PREFIX}{os.getpid()}-")
    env = {**os.environ, MULTIPROCESS_DIR_VARIABLE: metrics.name}
    try:
        for _ in range(count):
            if stopping:  # Ctrl-C while starting: the rest are not started (nothing stops them)
                break
            args = [*argv, *(() if workers else first_args)]
            workers.append(subprocess.Popen(args, start_new_session=True, env=env))
        if stopping:
            stop_all()  # again: one started as the signal came was not there the first time
        else:
            pids = ", ".join(str(worker.pid) for worker in workers)
            say(f"{count} gateway workers started (pids {pids})")
        while True:
            # Every worker polled (no short cut): each one that exited is reaped and seen.
            running = [worker.poll() is None for worker in workers]
            if first is None:
                first = _first_stopped_by_itself(workers, signaled)
                if first is not None:
                    worker = workers[first]
                    others = "; stopping the others" if any(running) and not stopping else ""
                    returncode = worker.returncode
                    prefix = "error: " if returncode else ""
                    say(
                        f"{prefix}gateway worker {first + 1} (pid {worker.pid}) "
                        f"{how_it_stopped(returncode)}{others}"
                    )
                    if not stopping:
                        stopping = True
                        stop_all()
            if not any(running):
                break
            time.sleep(_POLL_S)
    finally:
        if not stopping:
            stop_all()
        for worker in workers:
            worker.wait()
        metrics.cleanup()
        # Last, so that the caller can take them over at once (`pipeline gateway` ignores
        # them from then on: the workers have stopped).
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return supervisor_exit_code([w.returncode for w in workers], first, signaled)


def _first_stopped_by_itself(
    workers: Sequence[subprocess.Popen[bytes]], signaled: Collection[int]
) -> int | None:
    """The index of the first worker (in order) that has exited without the parent's SIGTERM."""
    for number, worker in enumerate(workers):
        if worker.returncode is not None and number not in signaled:
            return number
    return None


def supervisor_exit_code(
    returncodes: Sequence[int], first: int | None, signaled: Collection[int]
) -> int:
    """The parent's exit code from its workers' ``Popen.returncode`` values: the code of
    ``first`` (the first worker that stopped by itself) unless it is 0, else the highest of
    all, and at least 1 when a worker stopped by itself (the gateway was not asked to stop: a
    supervisor that restarts on failure must restart it); a worker killed by the SIGTERM the
    parent sent it (``signaled``) counts as 0."""

    def caused_by_itself(number: int) -> int:
        returncode = returncodes[number]
        if number in signaled and returncode == -signal.SIGTERM:
            return 0  # stopped by the parent before it could serve: nothing was lost
        return exit_code(returncode)

    if first is not None and caused_by_itself(first):
        return caused_by_itself(first)
    highest = max((caused_by_itself(number) for number in range(len(returncodes))), default=0)
    return max(highest, 1) if first is not None else highest


def exit_code(returncode: int) -> int:
    """A worker's exit code as a shell shows it: killed by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def how_it_stopped(returncode: int) -> str:
    """``was killed by SIGKILL`` / ``exited with code 2`` / ``stopped`` (code 0)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}" if returncode else "stopped"


def check_address(host: str, port: int) -> None:
    """Bind ``host:port`` as each worker will (``SO_REUSEADDR``, every address ``host`` names)
    and let go at once; :class:`PipelineError` when it cannot be.

    Without ``SO_REUSEPORT``, which the workers set: with it the probe shared the port with
    any listener that set it too, the workers of another gateway among them, and a second
    ``pipeline gateway --workers 2`` on a port the first one served split its traffic."""
    try:
        # "" is every interface, as for the workers (getaddrinfo's None).
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
    except OSError as error:  # socket.gaierror included
        raise cannot_listen(host, port, error) from None


def cannot_listen(host: str, port: int, error: OSError) -> PipelineError:
    """The one line for ``host:port`` that cannot be listened on (the probe's, the server's).

    A name that does not resolve (``socket.gaierror``, whose errno is getaddrinfo's, not
    errno's) is said as such; otherwise the system's own words for the errno (asyncio's
    ``strerror`` repeats the address: "error while attempting to bind on address ...")."""
    if isinstance(error, socket.gaierror):
        why = f"no such address ({(error.strerror or str(error)).lower()})"
    else:
        why = os.strerror(error.errno).lower() if error.errno else str(error)
    return PipelineError(f"cannot listen on {host}:{port}: {why}")


def remove_orphaned_metrics_folders(
    folder: Path, alive: Callable[[int], bool] | None = None
) -> list[Path]:
    """Remove the metrics folders in ``folder`` whose parent is gone (killed with SIGKILL, it
    could not remove its own); the ones removed. Only folders that name their parent's pid
    (``pipeline-gateway-metrics-<pid>-...``) and belong to this user: a folder of an older
    gateway, which does not name it, or of a pid that lives, is left as it is."""
    alive = alive or psutil.pid_exists  # another user's process counts too
    removed = []
    for path in folder.glob(f"{METRICS_FOLDER_PREFIX}*"):
        owner = _OWNED_FOLDER.match(path.name)
        try:
            mine = path.is_dir() and not path.is_symlink() and path.stat().st_uid == os.getuid()
        except OSError:
            continue
        if owner is None or not mine or alive(int(owner.group(1))):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed

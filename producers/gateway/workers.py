"""``pipeline gateway --workers N``: N gateway processes serving one port.

Each worker is a fresh interpreter running the gateway with ``SO_REUSEPORT`` on its listening
socket, so the kernel spreads the connections among them (Linux). Fresh processes rather than
``fork``: a forked child would inherit librdkafka's threads and an event loop in an unknown
state; each worker builds its own producer instead. The workers share what must be shared
through the database: the API keys and the Idempotency-Key store (PostgreSQL).

The parent only supervises:

1. it starts the workers in sessions of their own, so a Ctrl-C at the terminal reaches the
   parent alone;
2. it forwards every SIGINT or SIGTERM it gets to every worker as SIGTERM: the first stops them
   cleanly (each waits for its deliveries), a second stops them at once, as for one gateway;
3. when a worker exits by itself (it could not listen, it failed), the parent stops the others;
4. its exit code is the highest of the workers' (0 when all stopped cleanly);
5. it gives them a folder of its own for their metrics (:mod:`producers.gateway.metrics`), so
   that ``/metrics`` shows the sum of all of them, and removes it at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from types import FrameType

from producers.gateway.metrics import MULTIPROCESS_DIR_VARIABLE

__all__ = ["run_workers"]

_POLL_S = 0.2


def run_workers(argv: Sequence[str], count: int, *, say: Callable[[str], None] = print) -> int:
    """Run ``count`` processes of ``argv`` until they have all exited; their highest exit code."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count!r}")
    workers: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop_all() -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)

    def forward(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        stop_all()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    metrics = tempfile.TemporaryDirectory(prefix="pipeline-gateway-metrics-")
    env = {**os.environ, MULTIPROCESS_DIR_VARIABLE: metrics.name}
    try:
        for _ in range(count):
            workers.append(subprocess.Popen(list(argv), start_new_session=True, env=env))
        say(f"{count} gateway workers started (pids {', '.join(str(w.pid) for w in workers)})")
        while any(worker.poll() is None for worker in workers):
            if not stopping and any(worker.returncode is not None for worker in workers):
                stopping = True  # one stopped by itself: stop the others (once: cleanly)
                stop_all()
            time.sleep(_POLL_S)
    finally:
        if not stopping:
            stop_all()
        for worker in workers:
            worker.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        metrics.cleanup()
    return max((_exit_code(worker.returncode) for worker in workers), default=0)


def _exit_code(returncode: int) -> int:
    """A worker's exit code as a shell shows it: killed by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode

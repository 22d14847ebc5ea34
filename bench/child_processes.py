"""The child processes of bench/e2e_latency.py: started with their output in a log file of
their own, waited for until ready, stopped (SIGTERM, then SIGKILL after 30 s); and a free
port and a consumer group's readiness to wait on."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from consumer_groups import stable_members

from pipeline.kafka.clients import build_admin
from pipeline.settings import PipelineSettings

ROOT = Path(__file__).resolve().parent.parent


def start(name: str, args: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    with (logs / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            args, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )


def stop(children: Sequence[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def wait_for(what: str, ready: Callable[[], bool], children: Sequence[Any], logs: Path) -> None:
    deadline = time.monotonic() + 300
    while not ready():
        if any(child.poll() is not None for child in children):
            raise SystemExit(f"{what}: a process exited while starting; see {logs}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not ready after 300 s; see {logs}")
        time.sleep(0.3)


def terminate_all(children: Sequence[subprocess.Popen[bytes] | int]) -> None:
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            if isinstance(child, int):
                os.kill(child, signal.SIGTERM)
            elif child.poll() is None:
                child.send_signal(signal.SIGTERM)


def group_stable(settings: PipelineSettings, group: str) -> bool:
    members = stable_members(build_admin(settings.kafka), [group])
    return members is not None and members[group] > 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port

"""Helpers for tests that drive the `pipeline` command and second, isolated stacks."""

import os
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.settings import PipelineSettings

PIPELINE = str(Path(sys.executable).parent / "pipeline")


def free_port() -> int:
    return free_ports(1)[0]


#: Linux's range of ports for outgoing connections.
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _listening_ports() -> range:
    """Ports below the ephemeral range, where no outgoing connection takes one.

    A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, so between the
    probe and the server's own bind, any client connection on a busy machine may take it (seen:
    a test's Kafka failing with "Address already in use"). Empty off Linux.
    """
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(0)
    return range(max(1024, low - 12_000), low)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports, below the ephemeral range where there is one: every probe
    stays bound until all are chosen."""
    candidates = _listening_ports()
    probes: list[socket.socket] = []
    try:
        for _ in range(20 * count):
            if len(probes) == count or not candidates:
                break
            probe = socket.socket()
            try:
                probe.bind(("127.0.0.1", random.choice(candidates)))
            except OSError:  # taken: another
                probe.close()
                continue
            probes.append(probe)
        while len(probes) < count:  # no range, or too many taken: whatever the kernel gives
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            probes.append(probe)
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def run_pipeline(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    environment = {**os.environ, "COLUMNS": "250", **(env or {})}
    return subprocess.run(
        [PIPELINE, *args], capture_output=True, text=True, env=environment, timeout=timeout
    )


@contextmanager
def isolated_stack_env(settings: PipelineSettings) -> Iterator[dict[str, str]]:
    """Environment for a second stack on free ports, sharing the fetched distributions.

    Its home is a sibling of the main stack's (pytest's tmp folders are private to root, and
    Elasticsearch runs as its own user); whatever it started is stopped and removed after.
    """
    stack = settings.stack
    tag, kafka, controller, http, transport, postgres = free_ports(6)
    home = stack.home.parent / f"{stack.home.name}-test-{os.getpid()}-{tag}"
    env = {
        "PIPELINE_STACK__HOME": str(home),
        "PIPELINE_STACK__DIST_DIR": str(stack.dist_dir or stack.home / "dist"),
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka}",
        "PIPELINE_STACK__KAFKA_CONTROLLER_PORT": str(controller),
        "PIPELINE_ELASTICSEARCH__URL": f"http://127.0.0.1:{http}",
        "PIPELINE_STACK__ELASTICSEARCH_TRANSPORT_PORT": str(transport),
        "PIPELINE_STACK__POSTGRES_PORT": str(postgres),
    }
    try:
        yield env
    finally:
        run_pipeline("stack", "down", "--purge", env=env)
        shutil.rmtree(home, ignore_errors=True)

"""Helpers for tests that drive the `pipeline` command and second, isolated stacks."""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from pipeline.ports import free_ports
from pipeline.settings import PipelineSettings

PIPELINE = str(Path(sys.executable).parent / "pipeline")
#: The note every command prints on stderr when Kafka takes over a second to answer (a loaded
#: machine's healthy Kafka can): tests of exact stderr lines leave it out.
CONNECTING_NOTE = "connecting to Kafka at "


def said(stderr: str) -> list[str]:
    """``stderr``'s lines without the slow-Kafka note."""
    return [line for line in stderr.strip().splitlines() if not line.startswith(CONNECTING_NOTE)]


def first_said(stream: IO[str]) -> str:
    """The first line read from ``stream`` that is not the slow-Kafka note."""
    line = stream.readline()
    while line.startswith(CONNECTING_NOTE):
        line = stream.readline()
    return line


def run_pipeline_to_a_full_disk(*args: str) -> subprocess.CompletedProcess[str]:
    """``pipeline *args`` with its stdout on /dev/full, which opens and refuses every write."""
    with open("/dev/full", "wb") as full:
        return subprocess.run(
            [PIPELINE, *args], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120
        )


def run_pipeline(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    # A text console, as at a terminal: tests read its lines (`error: ...`); with its output
    # captured, "auto" would make a long-running program's lines, its error too, JSON.
    environment = {**os.environ, "COLUMNS": "250", "PIPELINE_LOGS__CONSOLE": "text", **(env or {})}
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

"""``pipeline gateway --workers``: a port taken, and a worker that dies.

Real ``pipeline gateway`` processes over the real Kafka and a PostgreSQL database of the test's
own (``--workers`` needs PostgreSQL); each test listens on a free port of its own, or one it
holds itself.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway_process import GatewayProcess
from tests.support.stack_cli import run_pipeline


@pytest.fixture
def database_env(postgres_url: str, catalogue_topics: None) -> dict[str, str]:
    return {"PIPELINE_DATABASE__URL": postgres_url, "PIPELINE_LOGS__CONSOLE": "text"}


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on (without ``SO_REUSEPORT``)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_workers_on_a_taken_port_exit_2_every_time_saying_it_once(
    database_env: dict[str, str], taken_port: int
):
    results = [
        run_pipeline(
            "gateway", "--port", str(taken_port), "--workers", "2", env=database_env, timeout=120
        )
        for _ in range(5)
    ]

    assert [result.returncode for result in results] == [2] * 5, [r.stderr for r in results]
    for result in results:
        said = f"error: cannot listen on 127.0.0.1:{taken_port}: address already in use"
        assert said in result.stderr.splitlines()
        assert result.stderr.count("cannot listen on") == 1  # checked once, by the parent
        assert "gateway workers started" not in result.stderr  # before any worker


def test_workers_on_a_port_another_gateways_workers_serve_exit_2(database_env: dict[str, str]):
    # Workers listen with SO_REUSEPORT: the check bound with it too, so it shared the port
    # with them, and a second gateway split the first one's traffic without a word.
    with socket.socket() as worker:
        worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        worker.bind(("127.0.0.1", 0))
        worker.listen()
        port = int(worker.getsockname()[1])

        result = run_pipeline(
            "gateway", "--port", str(port), "--workers", "2", env=database_env, timeout=120
        )

    assert result.returncode == 2, result.stderr
    said = f"error: cannot listen on 127.0.0.1:{port}: address already in use"
    assert said in result.stderr.splitlines()
    assert "gateway workers started" not in result.stderr


def test_one_gateway_on_a_taken_port_says_so_once_in_one_line(database_env: dict[str, str]):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])

        result = run_pipeline("gateway", "--port", str(port), env=database_env, timeout=120)

    assert result.returncode == 2, result.stderr
    # asyncio's own message named the address twice ("error while attempting to bind on ...").
    said = f"error: cannot listen on 127.0.0.1:{port}: address already in use"
    assert result.stderr.splitlines()[-1] == said, result.stderr


def test_a_worker_killed_stops_the_gateway_saying_which_and_how(
    tmp_path: Path, database_env: dict[str, str]
):
    gateway = GatewayProcess(tmp_path / "gateway.log", database_env, "--workers", "2", listening=2)
    try:
        started = re.search(r"2 gateway workers started \(pids (\d+), (\d+)\)", gateway.output())
        assert started is not None, gateway.output()
        second = int(started.group(2))
        os.kill(second, signal.SIGKILL)
        code = gateway.popen.wait(timeout=90)
    finally:
        gateway.stop()
    output = gateway.output()

    assert code == 137, output  # 128 + 9: the worker's code, as a shell shows it
    said = f"error: gateway worker 2 (pid {second}) was killed by SIGKILL; stopping the others"
    assert output.splitlines().count(said) == 1, output
    assert output.count("stopping: waiting up to") == 1, output  # worker 1, once
    assert output.count("gateway stopped: every message was delivered") == 1, output


def test_signals_after_the_workers_stopped_leave_the_exit_code(
    tmp_path: Path, database_env: dict[str, str]
):
    gateway = GatewayProcess(tmp_path / "gateway.log", database_env, "--workers", "2", listening=2)
    try:
        gateway.popen.send_signal(signal.SIGTERM)
        stopped = "gateway stopped: every message was delivered to Kafka"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and gateway.output().count(stopped) < 2:
            time.sleep(0.01)
        # Both workers stopped cleanly: SIGTERM after SIGTERM until the supervisor has exited
        # (in its last moments, with the default action back, one ended it with 143).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and gateway.popen.poll() is None:
            gateway.popen.send_signal(signal.SIGTERM)
            time.sleep(0.005)
        code = gateway.popen.wait(timeout=30)
    finally:
        gateway.stop()
    output = gateway.output()

    assert output.count(stopped) == 2, output
    assert code == 0, output
    assert "Traceback" not in output, output


def test_workers_end_with_a_supervisor_killed_with_sigkill(
    tmp_path: Path, database_env: dict[str, str]
):
    # Nothing of the supervisor runs after SIGKILL: its workers served on, holding the port.
    gateway = GatewayProcess(tmp_path / "gateway.log", database_env, "--workers", "2", listening=2)
    try:
        started = re.search(r"2 gateway workers started \(pids (\d+), (\d+)\)", gateway.output())
        assert started is not None, gateway.output()
        workers = [int(pid) for pid in started.groups()]
        gateway.popen.kill()
        gateway.popen.wait(timeout=30)

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.2)
        left = [pid for pid in workers if _alive(pid)]
    finally:
        gateway.stop()
    assert left == [], gateway.output()
    with socket.socket() as probe:  # the port is free again
        probe.bind(("127.0.0.1", gateway.port))


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no longer does: its parent, killed, reaps nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_host_that_is_no_address_is_said_in_words_not_an_error_number(
    database_env: dict[str, str],
):
    result = run_pipeline("gateway", "--host", "999.1.1.1", "--port", "18081", env=database_env)

    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot listen on 999.1.1.1:18081: no such address ("), last


def test_an_empty_host_is_refused_not_every_interface(database_env: dict[str, str]):
    result = run_pipeline("gateway", "--host", "", "--port", "18081", env=database_env)

    assert result.returncode == 2, result.stderr
    assert "'--host': must not be empty" in result.stderr
    assert "listening" not in result.stderr

"""Elasticsearch not reached, in one line: the URL without its credentials and why, in a few
words, not the client's chain of exception reprs (``Connection error caused by:
ConnectionError(Connection error caused by: NewConnectionError(...)))``).

The errors are the real client's, against real sockets on 127.0.0.1: a closed port, a server
that hangs up, one that never answers."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest
from elasticsearch import Elasticsearch
from pytest_socket import socket_allow_hosts

from pipeline.logs import elasticsearch as es_module
from pipeline.logs.elasticsearch import refuse_an_https_port_over_http, unreachable

pytestmark = pytest.mark.enable_socket


@pytest.fixture(autouse=True)
def _loopback_only() -> None:
    socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)


@pytest.fixture
def server() -> Iterator[Callable[[Callable[[socket.socket], None]], int]]:
    """Start a server doing ``handle(connection)`` with each connection; its port."""
    stop = threading.Event()
    listeners: list[socket.socket] = []
    held: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(handle: Callable[[socket.socket], None]) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.05)
        listeners.append(listener)

        def accept() -> None:
            while not stop.is_set():
                try:
                    connection = listener.accept()[0]
                except TimeoutError:
                    continue
                held.append(connection)
                handle(connection)

        threads.append(threading.Thread(target=accept, daemon=True))
        threads[-1].start()
        return int(listener.getsockname()[1])

    yield start
    stop.set()
    for thread in threads:
        thread.join()
    for sock in [*listeners, *held]:
        sock.close()


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def _error_of(url: str, **options) -> Exception:
    es = Elasticsearch(url, request_timeout=0.5, **options)
    try:
        es.info()
    except Exception as error:
        return error
    raise AssertionError("it answered")


@pytest.mark.parametrize("retries", [0, 3])  # 3: the client's default, an error per attempt
def test_a_refused_connection_is_said_in_two_words_without_the_password(retries):
    port = _closed_port()
    error = _error_of(f"http://elastic:hunter2@127.0.0.1:{port}", max_retries=retries)

    assert unreachable(f"http://elastic:hunter2@127.0.0.1:{port}", error, 0.0) == (
        f"cannot reach Elasticsearch at http://[REDACTED]@127.0.0.1:{port} (connection refused)"
    )


def _reset(connection: socket.socket) -> None:
    connection.recv(65536)
    # SO_LINGER 0: close with a reset, as a crashed or restarting node's host does.
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def test_a_connection_closed_without_an_answer_is_said_so(server):
    port = server(_reset)
    error = _error_of(f"http://127.0.0.1:{port}", max_retries=0)

    assert unreachable(f"http://127.0.0.1:{port}", error, 0.0) == (
        f"cannot reach Elasticsearch at http://127.0.0.1:{port} (the connection was closed "
        "without an answer)"
    )


def test_no_answer_is_said_with_the_time_the_request_waited(server):
    port = server(lambda connection: None)  # accepts, never answers
    error = _error_of(f"http://127.0.0.1:{port}", max_retries=0)

    for waited, said in ((30.04, "30"), (0.52, "0.5")):
        assert unreachable(f"http://127.0.0.1:{port}", error, waited) == (
            f"Elasticsearch at http://127.0.0.1:{port} did not answer within {said} s "
            "(PIPELINE_ELASTICSEARCH__REQUEST_TIMEOUT_S)"
        )


def test_the_https_port_check_waits_briefly_whatever_the_clients_request_timeout():
    # It kept a shipper started against a stalled Elasticsearch silent for the client's whole
    # request timeout (30 s), its metrics port not answering, before anything else.
    asked: list[dict] = []

    class Client:
        def options(self, **options):
            asked.append(options)
            return self

        def info(self):
            return {}

    refuse_an_https_port_over_http(Client(), "http://127.0.0.1:9200")  # type: ignore[arg-type]

    assert asked == [{"request_timeout": es_module.HANG_UP_CHECK_S, "max_retries": 0}]
    assert es_module.HANG_UP_CHECK_S <= 5

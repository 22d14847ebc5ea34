""":func:`not_reached`: an Elasticsearch not reached, in the words the shipper and ``dashboards
template`` use (``cannot reach Elasticsearch at URL (why)``), the URL without its credentials;
an HTTPS port asked over ``http://`` says so as the reason. The shipper's start refuses such a
port in these words too (it said ``elasticsearch is unreachable: Connection aborted...``).

The errors are the real client's, against real sockets on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch
from pytest_socket import socket_allow_hosts

from pipeline.errors import PipelineError
from pipeline.logs.elasticsearch import not_reached, refuse_an_https_port_over_http
from tests.support.tls_server import tls_server

pytestmark = pytest.mark.enable_socket

HTTPS_HINT = (
    "(the server closed the connection at once: an HTTPS port? then "
    "PIPELINE_ELASTICSEARCH__URL starts with https://)"
)


@pytest.fixture(autouse=True)
def _loopback_only() -> None:
    socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)


def _error_of(url: str) -> Exception:
    try:
        Elasticsearch(url, request_timeout=2, max_retries=0).info()
    except Exception as error:
        return error
    raise AssertionError("it answered")


def test_a_refused_connection_names_the_url_without_its_password():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = int(probe.getsockname()[1])
    url = f"http://elastic:hunter2@127.0.0.1:{port}"

    assert not_reached(url, _error_of(url)) == (
        f"cannot reach Elasticsearch at http://[REDACTED]@127.0.0.1:{port} (connection refused)"
    )


def test_an_https_port_over_http_gives_the_hint_as_its_reason(tmp_path: Path):
    with tls_server(tmp_path) as (address, _):
        url = f"http://{address}"
        said = not_reached(url, _error_of(url))  # the port is asked whether it speaks TLS

    assert said == f"cannot reach Elasticsearch at {url} {HTTPS_HINT}"


# Read first, the client sees RemoteDisconnected; closed at once, a reset: both "aborted".
@pytest.mark.parametrize("read_first", [True, False])
def test_a_server_that_hangs_up_without_tls_is_said_to_have_closed_the_connection(read_first):
    # An Elasticsearch going away, or a proxy in front of one that is down: `logs search
    # --follow` said "an HTTPS port? then PIPELINE_ELASTICSEARCH__URL starts with https://",
    # sending the user looking at TLS during an outage.
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def hang_up() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                connection = listener.accept()[0]
                with connection:
                    if read_first:
                        connection.recv(65536)

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        error = _error_of(url)
        said = not_reached(url, error)
    finally:
        stop.set()
        thread.join(5)
        listener.close()

    assert "Connection aborted" in repr(error)  # what the HTTPS hint was given for
    assert said == (
        f"cannot reach Elasticsearch at {url} (the connection was closed without an answer)"
    )


def test_the_shippers_https_port_check_says_it_in_the_same_words(tmp_path: Path):
    with tls_server(tmp_path) as (address, _), pytest.raises(PipelineError) as refused:
        url = f"http://{address}"
        refuse_an_https_port_over_http(Elasticsearch(url), url)

    assert str(refused.value) == f"cannot reach Elasticsearch at {url} {HTTPS_HINT}"

"""``pipeline logs search`` (and ``--follow``) with an Elasticsearch it cannot reach: one line
naming the URL without its credentials and why in a few words, as ``dashboards template`` and
the shipper say it, not the client's text (``elasticsearch is unreachable:
HTTPConnection(host='127.0.0.1', port=1): Failed to establish a new connection: [Errno 111]
Connection refused``).

The errors are the real client's, against real sockets on 127.0.0.1 (sockets on, for the
loopback address only): a closed port, and a TLS port asked over http://."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from pytest_socket import socket_allow_hosts
from typer.testing import CliRunner

from pipeline.cli import logs
from pipeline.cli.main import app
from pipeline.errors import PipelineError
from pipeline.logs import elasticsearch as logs_elasticsearch
from tests.support.tls_server import tls_server

PASSWORD = "hunter2"

pytestmark = pytest.mark.enable_socket


@pytest.fixture(autouse=True)
def _loopback_only() -> None:
    socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (connections to it are refused)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def _hit(doc_id: str, message: str) -> dict[str, Any]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    source = {"@timestamp": stamp, "log": {"level": "info"}, "message": message}
    return {"_id": doc_id, "_source": source, "sort": [0, doc_id]}


def _answer(*hits: dict[str, Any]) -> dict[str, Any]:
    return {"hits": {"total": {"value": len(hits), "relation": "eq"}, "hits": list(hits)}}


def test_a_refused_connection_is_one_line_naming_the_url_without_its_password(
    monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    monkeypatch.setenv(
        "PIPELINE_ELASTICSEARCH__URL", f"http://elastic:{PASSWORD}@127.0.0.1:{closed_port}"
    )

    result = CliRunner().invoke(app, ["logs", "search", "x"])

    assert isinstance(result.exception, PipelineError), result.exception
    assert str(result.exception) == (
        f"cannot reach Elasticsearch at http://[REDACTED]@127.0.0.1:{closed_port} "
        "(connection refused)"
    )


def test_an_https_port_asked_over_http_says_so_in_the_same_form(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with tls_server(tmp_path) as (address, _):
        monkeypatch.setenv("PIPELINE_ELASTICSEARCH__URL", f"http://{address}")
        result = CliRunner().invoke(app, ["logs", "search", "x"])

    assert isinstance(result.exception, PipelineError), result.exception
    assert str(result.exception) == (
        f"cannot reach Elasticsearch at http://{address} (the server closed the connection at "
        "once: an HTTPS port? then PIPELINE_ELASTICSEARCH__URL starts with https://)"
    )


def test_follow_says_a_refused_connection_in_the_same_words_and_goes_on(
    monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    # The first search answers; the first poll finds Elasticsearch gone (the real client's
    # error, against the closed port); the next finds it back with a line shipped meanwhile.
    url = f"http://elastic:{PASSWORD}@127.0.0.1:{closed_port}"
    monkeypatch.setenv("PIPELINE_ELASTICSEARCH__URL", url)
    real = Elasticsearch(url, max_retries=0)
    before, meanwhile = _hit("a", "before the outage"), _hit("b", "shipped meanwhile")

    class GoneForOnePoll:
        searches = 0

        def __enter__(self) -> GoneForOnePoll:
            return self

        def __exit__(self, *exc_info: object) -> None:
            real.close()

        def search(self, index: str, **body: Any) -> Any:
            self.searches += 1
            if self.searches == 2:
                return real.search(index=index, **body)
            return _answer(before) if self.searches == 1 else _answer(before, meanwhile)

    printed: list[str] = []

    def print_then_stop(hits: list[dict[str, Any]], output: str) -> None:
        printed.extend(hit["_source"]["message"] for hit in hits)
        if "shipped meanwhile" in printed:
            raise KeyboardInterrupt  # Ctrl-C

    monkeypatch.setattr(logs_elasticsearch, "build_elasticsearch", lambda es: GoneForOnePoll())
    monkeypatch.setattr(logs, "_FOLLOW_POLL_S", 0)
    monkeypatch.setattr(logs, "_print", print_then_stop)
    result = CliRunner().invoke(app, ["logs", "search", "--follow", "-o", "ndjson"])

    assert result.exit_code == 130, result.exception
    assert printed == ["before the outage", "shipped meanwhile"]
    assert result.stderr.splitlines() == [
        f"warning: cannot reach Elasticsearch at http://[REDACTED]@127.0.0.1:{closed_port} "
        "(connection refused); still following (Ctrl-C to stop)",
        "Elasticsearch answers again; following",
    ]
    assert PASSWORD not in result.stderr

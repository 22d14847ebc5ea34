"""An Elasticsearch (or Kibana) that accepts the connection and never answers: every command that
asks it is one line naming the URL (without credentials) and the timeout, exit code 2, never a
traceback; ``logs search --follow`` waits it out and goes on following.

The servers are real sockets on 127.0.0.1: one that accepts and never says a word, and a
scripted HTTP server that answers some requests as Elasticsearch does and leaves others
unanswered. A stall is what a stand-in cannot show honestly (the client's own timeout, its own
error), so sockets are on here, for the loopback address only: still no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pytest_socket import socket_allow_hosts
from typer.testing import CliRunner

from pipeline.cli import logs
from pipeline.cli.main import app
from pipeline.dashboards.kibana import KibanaImportError, import_to_kibana
from pipeline.dashboards.saved_objects import export_ndjson
from pipeline.errors import PipelineError
from tests.support.silent_server import silent_server

#: The console script, as a user runs it (installed beside this interpreter).
PIPELINE = str(Path(sys.executable).with_name("pipeline"))
TIMEOUT_S = "0.3"
PASSWORD = "hunter2"

pytestmark = pytest.mark.enable_socket


@pytest.fixture(autouse=True)
def _loopback_only() -> None:
    socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose server accepts every connection and never answers."""
    with silent_server() as port:
        yield port


#: What the scripted server does with a request: an answer (status, JSON body) or None: no
#: answer at all (the connection stays open, silent).
Answer = tuple[int, Any] | None
Script = Callable[[str, str, Any], Answer]


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], int]]:
    """Start an HTTP server that answers as ``script(method, path, body)`` says; its port."""
    servers: list[ThreadingHTTPServer] = []
    release = threading.Event()

    def start(script: Script) -> int:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                answer = script(self.command, self.path, json.loads(raw) if raw else None)
                if answer is None:
                    release.wait()  # never answers while the test runs
                    return
                status, body = answer
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("X-Elastic-Product", "Elasticsearch")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_HEAD = do_PUT = _answer

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return int(server.server_address[1])

    yield start
    release.set()
    for server in servers:
        server.shutdown()
        server.server_close()


def _point_at(monkeypatch: pytest.MonkeyPatch, port: int) -> str:
    """The settings of a CliRunner run: Elasticsearch at ``port`` with a password in its URL
    and a short request timeout; the URL as output may show it."""
    monkeypatch.setenv("PIPELINE_ELASTICSEARCH__URL", f"http://elastic:{PASSWORD}@127.0.0.1:{port}")
    monkeypatch.setenv("PIPELINE_ELASTICSEARCH__REQUEST_TIMEOUT_S", TIMEOUT_S)
    return f"http://[REDACTED]@127.0.0.1:{port}"


def _stalled(shown_url: str) -> str:
    return (
        f"Elasticsearch at {shown_url} did not answer within {TIMEOUT_S} s "
        "(PIPELINE_ELASTICSEARCH__REQUEST_TIMEOUT_S)"
    )


# --- as a user runs them: one line, exit code 2 -------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["logs", "search", "*"], ["logs", "search", "--follow"], ["dashboards", "template"]],
    ids=["logs-search", "logs-search-follow", "dashboards-template"],
)
def test_an_elasticsearch_that_never_answers_is_one_line_and_exit_2(
    tmp_path: Path, silent_port: int, command: list[str]
) -> None:
    # --follow too: the first search is not following yet, so it fails as any search does.
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("PIPELINE_")},
        "PIPELINE_ELASTICSEARCH__URL": f"http://elastic:{PASSWORD}@127.0.0.1:{silent_port}",
        "PIPELINE_ELASTICSEARCH__REQUEST_TIMEOUT_S": TIMEOUT_S,
        "COLUMNS": "200",
    }
    found = subprocess.run(
        [PIPELINE, *command],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )

    assert found.returncode == 2, found.stderr[-3000:]
    assert found.stderr.splitlines() == [
        f"error: {_stalled(f'http://[REDACTED]@127.0.0.1:{silent_port}')}"
    ]
    assert PASSWORD not in found.stderr + found.stdout


# --- every request of `logs search` -------------------------------------------------------


def _hit(doc_id: str, message: str) -> dict[str, Any]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    source = {
        "@timestamp": stamp,
        "log": {"level": "info", "logger": "app"},
        "service": {"name": "svc"},
        "message": message,
        "event": {"id": doc_id},
    }
    return {"_index": "pipeline-logs-x", "_id": doc_id, "_source": source, "sort": [0, doc_id]}


def _hits(*hits: dict[str, Any]) -> tuple[int, Any]:
    total = {"value": len(hits), "relation": "eq"}
    return 200, {"_shards": {"total": 1, "failed": 0}, "hits": {"total": total, "hits": hits}}


def _search_answering(
    monkeypatch: pytest.MonkeyPatch, scripted: Callable[[Script], int], script: Script
) -> tuple[Any, str]:
    url = _point_at(monkeypatch, scripted(script))
    return CliRunner().invoke(app, ["logs", "search", "*"]), url


def test_a_query_check_elasticsearch_does_not_answer_is_one_line(
    monkeypatch: pytest.MonkeyPatch, scripted: Callable[[Script], int]
) -> None:
    # Nothing matched, so the query is checked; that request unanswered once passed as "no
    # check possible", and the search said "no log lines ... match" (exit 0).
    def script(method: str, path: str, body: Any) -> Answer:
        if "_validate/query" in path:
            return None
        if path.startswith("/pipeline-logs/_search"):
            return _hits()
        return 200, {}  # the alias exists

    result, url = _search_answering(monkeypatch, scripted, script)

    assert isinstance(result.exception, PipelineError), result.exception
    assert str(result.exception) == _stalled(url)


def test_an_index_check_elasticsearch_does_not_answer_is_one_line(
    monkeypatch: pytest.MonkeyPatch, scripted: Callable[[Script], int]
) -> None:
    def script(method: str, path: str, body: Any) -> Answer:
        if method == "HEAD":  # is there an index behind the alias?
            return None
        if "_validate/query" in path:
            return 200, {"valid": True, "explanations": []}
        return _hits()

    result, url = _search_answering(monkeypatch, scripted, script)

    assert isinstance(result.exception, PipelineError), result.exception
    assert str(result.exception) == _stalled(url)


# --- `logs search --follow` through an outage ---------------------------------------------


BUSY = (503, {"error": {"type": "no_shard_available_action_exception", "reason": "restarting"}})


@pytest.mark.parametrize("outage", [None, BUSY], ids=["no-answer", "503"])
def test_follow_waits_out_an_elasticsearch_that_stops_answering(
    monkeypatch: pytest.MonkeyPatch, scripted: Callable[[Script], int], outage: Answer
) -> None:
    # Two polls without an answer, then Elasticsearch answers again with a line shipped
    # meanwhile: one warning, one line when it is back, and the line is printed.
    # (The client asks again after a 503 by itself, up to 3 times: 4 requests a poll.)
    before, meanwhile = _hit("a", "before the outage"), _hit("b", "shipped meanwhile")
    searches: list[Any] = []
    unanswered = 2 if outage is None else 2 * 4

    def script(method: str, path: str, body: Any) -> Answer:
        searches.append(body)
        if len(searches) == 1:
            return _hits(before)  # the first search, before following
        if len(searches) <= 1 + unanswered:
            return outage
        return _hits(before, meanwhile)

    url = _point_at(monkeypatch, scripted(script))
    printed: list[str] = []

    def print_then_stop(hits: list[dict[str, Any]], output: str) -> None:
        printed.extend(hit["_source"]["message"] for hit in hits)
        if "shipped meanwhile" in printed:
            raise KeyboardInterrupt  # Ctrl-C

    monkeypatch.setattr(logs, "_FOLLOW_POLL_S", 0)
    monkeypatch.setattr(logs, "_print", print_then_stop)
    result = CliRunner().invoke(app, ["logs", "search", "--follow", "-o", "ndjson"])

    assert result.exit_code == 130, result.exception
    assert printed == ["before the outage", "shipped meanwhile"]
    said = result.stderr.splitlines()
    assert len(said) == 2, said
    why = _stalled(url) if outage is None else "Elasticsearch refused the search (503): restarting"
    assert said[0] == f"warning: {why}; still following (Ctrl-C to stop)"
    assert said[1] == "Elasticsearch answers again; following"
    assert PASSWORD not in result.stderr


def test_follow_still_ends_on_an_error_no_wait_mends(
    monkeypatch: pytest.MonkeyPatch, scripted: Callable[[Script], int]
) -> None:
    searches: list[Any] = []

    def script(method: str, path: str, body: Any) -> Answer:
        searches.append(body)
        if len(searches) == 1:
            return _hits(_hit("a", "a line"))
        return 400, {"error": {"type": "parse_exception", "reason": "cannot parse"}}

    _point_at(monkeypatch, scripted(script))
    monkeypatch.setattr(logs, "_FOLLOW_POLL_S", 0)
    result = CliRunner().invoke(app, ["logs", "search", "--follow", "-o", "ndjson"])

    assert isinstance(result.exception, PipelineError), result.exception
    assert str(result.exception) == "bad query: cannot parse"


# --- Kibana, for `dashboards import` ------------------------------------------------------


def test_a_kibana_that_never_answers_is_named_without_its_password(silent_port: int) -> None:
    with pytest.raises(KibanaImportError) as raised:
        import_to_kibana(
            f"http://elastic:{PASSWORD}@127.0.0.1:{silent_port}", export_ndjson(), timeout_s=0.3
        )

    assert str(raised.value) == (
        f"Kibana at http://[REDACTED]@127.0.0.1:{silent_port} did not answer within 0.3 s"
    )

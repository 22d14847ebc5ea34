"""``pipeline dashboards`` as a subprocess: export, import, template.

Kibana does not run on this machine (it runs only in docker-compose.yml), so ``import`` is
tested against a small fake of Kibana's ``POST /api/saved_objects/_import`` written here with
aiohttp. It checks what the real one checks before reading a file (the ``kbn-xsrf`` header, a
multipart ``file`` part named ``*.ndjson``) and answers in Kibana's 8.x shapes; the test then
asserts exactly what the command sent. What Kibana does with the objects is not tested here:
the saved objects' queries, aggregations and fields are checked against the real
Elasticsearch in tests/integration/pipeline/test_log_schema_es.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from pipeline.dashboards import (
    NDJSON_FILE,
    TEMPLATE_FILE,
    export_ndjson,
    index_template_json,
    saved_objects,
)
from pipeline.logs.schema import index_template
from pipeline.ports import free_port
from tests.support.stack_cli import run_pipeline


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    parts: list[dict[str, Any]] = field(default_factory=list)


Answer = Callable[[Received], tuple[int, dict[str, Any]]]


def kibana_success(received):
    objects = [json.loads(line) for line in received.parts[0]["text"].splitlines()]
    objects = [obj for obj in objects if "exportedCount" not in obj]
    return 200, {
        "success": True,
        "successCount": len(objects),
        "successResults": [
            {"type": obj["type"], "id": obj["id"], "meta": {"title": obj["attributes"]["title"]}}
            for obj in objects
        ],
        "warnings": [],
    }


class FakeKibana:
    """Kibana's import endpoint on a free local port, in a thread; records every request."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[Received] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _import(self, request: web.Request) -> web.Response:
        received = Received(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        self.requests.append(received)
        if "kbn-xsrf" not in received.headers:
            message = "Request must contain a kbn-xsrf header."
            return web.json_response(
                {"statusCode": 400, "error": "Bad Request", "message": message}, status=400
            )
        if not received.headers.get("content-type", "").startswith("multipart/form-data"):
            return web.json_response(
                {"statusCode": 415, "error": "Unsupported Media Type", "message": "not multipart"},
                status=415,
            )
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            received.parts.append(
                {
                    "name": part.name,
                    "filename": part.filename,
                    "content_type": part.headers.get("Content-Type"),
                    "text": (await part.read()).decode(),
                }
            )
        files = [p for p in received.parts if p["name"] == "file"]
        if not files or not (files[0]["filename"] or "").endswith(".ndjson"):
            return web.json_response(
                {"statusCode": 400, "error": "Bad Request", "message": "Invalid file extension"},
                status=400,
            )
        status, body = self.answer(received)
        return web.json_response(body, status=status)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/api/saved_objects/_import", self._import)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._started.set()
        self._loop.run_forever()

    def __enter__(self) -> FakeKibana:
        self._thread.start()
        assert self._started.wait(10), "the fake Kibana did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._runner is not None
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def fake_kibana() -> Iterator[Callable[[Answer], FakeKibana]]:
    started: list[FakeKibana] = []

    def start(answer: Answer = kibana_success) -> FakeKibana:
        kibana = FakeKibana(answer).__enter__()
        started.append(kibana)
        return kibana

    yield start
    for kibana in started:
        kibana.__exit__(None, None, None)


def one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# --- export ------------------------------------------------------------------------------------


def test_export_writes_the_saved_objects_and_the_index_template(tmp_path):
    out = tmp_path / "assets"

    result = run_pipeline("dashboards", "export", "--out", str(out))

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([NDJSON_FILE, TEMPLATE_FILE])
    assert (out / NDJSON_FILE).read_text(encoding="utf-8") == export_ndjson()
    assert (out / TEMPLATE_FILE).read_text(encoding="utf-8") == index_template_json()
    assert str(out / NDJSON_FILE) in result.stdout


def test_export_is_on_the_configured_log_alias(tmp_path):
    out = tmp_path / "assets"

    result = run_pipeline(
        "dashboards", "export", "--out", str(out), env={"PIPELINE_LOGS__INDEX_ALIAS": "shop-logs"}
    )

    assert result.returncode == 0, result.stderr
    assert (out / NDJSON_FILE).read_text(encoding="utf-8") == export_ndjson("shop-logs")
    assert (out / TEMPLATE_FILE).read_text(encoding="utf-8") == index_template_json("shop-logs")


def test_export_to_a_path_that_is_a_file_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")

    result = run_pipeline("dashboards", "export", "--out", str(blocker / "sub"))

    assert result.returncode == 2
    assert one_line(result.stderr).startswith("error: cannot write to ")


# --- import ------------------------------------------------------------------------------------


def test_import_posts_the_ndjson_as_multipart_with_kbn_xsrf_and_overwrite(fake_kibana):
    kibana = fake_kibana()

    result = run_pipeline("dashboards", "import", "--kibana-url", kibana.url)

    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip() == f"imported {len(saved_objects())} saved objects into {kibana.url}"
    )
    [request] = kibana.requests
    assert request.method == "POST"
    assert request.path == "/api/saved_objects/_import"
    assert request.query == {"overwrite": "true"}
    assert request.headers["kbn-xsrf"] == "true"
    [part] = request.parts
    assert part["name"] == "file"
    assert part["filename"] == "pipeline-logs.ndjson"
    assert part["content_type"] == "application/ndjson"
    assert part["text"] == export_ndjson()


def test_import_sends_the_given_file_and_no_overwrite_when_asked(fake_kibana, tmp_path):
    kibana = fake_kibana()
    ndjson = export_ndjson().splitlines()
    only_data_view = tmp_path / "one.ndjson"
    only_data_view.write_text(ndjson[0] + "\n", encoding="utf-8")

    result = run_pipeline(
        "dashboards",
        "import",
        "--kibana-url",
        kibana.url + "/",
        "--file",
        str(only_data_view),
        "--no-overwrite",
    )

    assert result.returncode == 0, result.stderr
    assert "imported 1 saved objects" in result.stdout
    [request] = kibana.requests
    assert request.query == {"overwrite": "false"}
    assert request.parts[0]["text"] == ndjson[0] + "\n"


def test_objects_kibana_refuses_are_listed_in_a_table_and_exit_1(fake_kibana):
    def refuse_two(received):
        return 200, {
            "success": False,
            "successCount": 6,
            "errors": [
                {
                    "id": "dash-1",
                    "type": "dashboard",
                    "meta": {"title": "Pipeline logs", "icon": "dashboardApp"},
                    "error": {
                        "type": "missing_references",
                        "references": [{"type": "search", "id": "gone-1"}],
                    },
                },
                {
                    "id": "vis-1",
                    "type": "visualization",
                    "meta": {"title": "Top loggers"},
                    "error": {"type": "unknown", "message": "invalid visState", "statusCode": 400},
                },
            ],
            "warnings": [],
        }

    kibana = fake_kibana(refuse_two)

    result = run_pipeline("dashboards", "import", "--kibana-url", kibana.url)

    assert result.returncode == 1
    assert one_line(result.stderr) == "error: Kibana refused 2 saved objects (6 imported)"
    table = result.stdout
    assert "objects Kibana refused" in table
    dashboard_row = next(line for line in table.splitlines() if "dash-1" in line)
    assert "Pipeline logs" in dashboard_row and "missing_references" in dashboard_row
    assert "missing search gone-1" in dashboard_row
    vis_row = next(line for line in table.splitlines() if "vis-1" in line)
    assert "Top loggers" in vis_row and "invalid visState" in vis_row


def test_a_request_kibana_refuses_is_a_one_line_error_with_its_message(fake_kibana):
    kibana = fake_kibana(
        lambda received: (
            503,
            {"statusCode": 503, "error": "Service Unavailable", "message": "Kibana is not ready"},
        )
    )

    result = run_pipeline("dashboards", "import", "--kibana-url", kibana.url)

    assert result.returncode == 2
    assert one_line(result.stderr) == "error: Kibana refused the import (503): Kibana is not ready"
    assert result.stdout == ""


def test_an_unreachable_kibana_is_a_one_line_error_and_exit_2():
    url = f"http://127.0.0.1:{free_port()}"

    result = run_pipeline("dashboards", "import", "--kibana-url", url)

    assert result.returncode == 2
    assert one_line(result.stderr).startswith(f"error: cannot reach Kibana at {url}: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_a_missing_file_is_a_one_line_error_and_exit_2(tmp_path):
    result = run_pipeline(
        "dashboards",
        "import",
        "--kibana-url",
        f"http://127.0.0.1:{free_port()}",
        "--file",
        str(tmp_path / "nope.ndjson"),
    )

    assert result.returncode == 2
    assert one_line(result.stderr).startswith("error: cannot read ")


# --- template ----------------------------------------------------------------------------------


def test_template_puts_the_index_template_on_elasticsearch(elasticsearch_client, unique_name):
    alias = unique_name("logs").lower()
    try:
        result = run_pipeline("dashboards", "template", "--alias", alias)

        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"index template {alias} is in place"
        [stored] = elasticsearch_client.indices.get_index_template(name=alias)["index_templates"]
        expected = index_template(alias=alias)
        assert stored["index_template"]["index_patterns"] == expected["index_patterns"]
        assert stored["index_template"]["template"]["aliases"] == {alias: {}}
    finally:
        elasticsearch_client.options(ignore_status=404).indices.delete_index_template(name=alias)


def test_template_with_elasticsearch_unreachable_is_a_one_line_error():
    url = f"http://127.0.0.1:{free_port()}"

    result = run_pipeline(
        "dashboards",
        "template",
        "--alias",
        "test.logs-unreachable",
        env={"PIPELINE_ELASTICSEARCH__URL": url, "PIPELINE_ELASTICSEARCH__REQUEST_TIMEOUT_S": "5"},
    )

    assert result.returncode == 2
    assert one_line(result.stderr) == f"error: cannot reach Elasticsearch at {url}"


def test_template_defaults_to_the_configured_log_alias(elasticsearch_client, unique_name):
    alias = unique_name("logs").lower()
    try:
        result = run_pipeline("dashboards", "template", env={"PIPELINE_LOGS__INDEX_ALIAS": alias})

        assert result.returncode == 0, result.stderr
        [stored] = elasticsearch_client.indices.get_index_template(name=alias)["index_templates"]
        assert stored["index_template"]["index_patterns"] == [f"{alias}-*"]
    finally:
        elasticsearch_client.options(ignore_status=404).indices.delete_index_template(name=alias)


def test_template_takes_its_shards_and_replicas_from_the_settings(
    elasticsearch_client, unique_name
):
    # Replicas were always 0: on a cluster, a node lost lost those days' logs.
    alias = unique_name("logs").lower()
    settings = {
        "PIPELINE_LOGS__INDEX_ALIAS": alias,
        "PIPELINE_LOGS__INDEX_SHARDS": "2",
        "PIPELINE_LOGS__INDEX_REPLICAS": "1",
    }
    try:
        result = run_pipeline("dashboards", "template", env=settings)

        assert result.returncode == 0, result.stderr
        [stored] = elasticsearch_client.indices.get_index_template(name=alias)["index_templates"]
        index = stored["index_template"]["template"]["settings"]["index"]
        assert (index["number_of_shards"], index["number_of_replicas"]) == ("2", "1")
    finally:
        elasticsearch_client.options(ignore_status=404).indices.delete_index_template(name=alias)


def test_a_template_elasticsearch_refuses_is_one_line_with_its_reason(
    elasticsearch_client, unique_name
):
    alias = unique_name("logs").lower()
    inner = f"{alias}-inner"  # its indices' pattern falls inside the first one's
    try:
        assert run_pipeline("dashboards", "template", "--alias", alias).returncode == 0

        result = run_pipeline("dashboards", "template", "--alias", inner)

        assert result.returncode == 2
        line = one_line(result.stderr)
        assert line.startswith("error: Elasticsearch refused the index template (400): ")
        assert "matching patterns from existing templates" in line, line
    finally:
        for name in (alias, inner):
            elasticsearch_client.options(ignore_status=404).indices.delete_index_template(name=name)

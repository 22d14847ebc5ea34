"""``pipeline dashboards template`` against a server that is not Elasticsearch: one line naming
the URL, exit code 2, never a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.errors import PipelineError
from pipeline.logs import elasticsearch as logs_elasticsearch


class _Indices:
    def __init__(self, error):
        self.error = error

    def put_index_template(self, **_body):
        raise self.error


class _Server:
    def __init__(self, error):
        self.indices = _Indices(error)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None


def _plain_text_answer():
    """What elastic-transport raises for ``# HTTP 405 ...`` without a content type."""
    from elastic_transport import JsonSerializer, SerializationError

    try:
        JsonSerializer().loads(b"# HTTP 405 Method Not Allowed\n")
    except SerializationError as error:
        return error
    raise AssertionError("the answer parsed")


def _html_answer():
    from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
    from elasticsearch import ApiError

    meta = ApiResponseMeta(
        status=501,
        http_version="1.0",
        headers=HttpHeaders(),
        duration=0.0,
        node=NodeConfig("http", "127.0.0.1", 8000),
    )
    body = "<!DOCTYPE HTML>\n<html lang='en'><body>Unsupported method ('PUT')</body></html>"
    return ApiError(message=body, meta=meta, body=body)


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (_plain_text_answer(), "# HTTP 405 Method Not Allowed"),  # a metrics port
        (_html_answer(), "501: <!DOCTYPE HTML>"),  # python3 -m http.server
    ],
    ids=["plain-text", "html"],
)
def test_a_server_that_is_not_elasticsearch_is_one_line_naming_the_url(monkeypatch, error, said):
    monkeypatch.setenv("PIPELINE_ELASTICSEARCH__URL", "http://127.0.0.1:9110")
    monkeypatch.setattr(logs_elasticsearch, "build_elasticsearch", lambda _es: _Server(error))

    result = CliRunner().invoke(app, ["dashboards", "template", "--alias", "fxl-logs"])

    assert isinstance(result.exception, PipelineError)
    assert str(result.exception) == (
        f"the server at http://127.0.0.1:9110 did not answer as Elasticsearch ({said}); "
        "check PIPELINE_ELASTICSEARCH__URL (Elasticsearch's address, without a path)"
    )

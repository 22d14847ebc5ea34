from pathlib import Path
from unittest.mock import patch

import pytest
from pydantic import SecretStr

from pipeline.errors import PipelineError
from pipeline.logs.elasticsearch import (
    build_elasticsearch,
    elasticsearch_options,
    foreign_answer,
    unreadable,
)
from pipeline.settings import ElasticsearchSettings
from pipeline.stack.health import elasticsearch_health


def test_elasticsearch_auth_is_api_key_or_basic_never_both():
    assert elasticsearch_options(ElasticsearchSettings(api_key=SecretStr("k")))["api_key"] == "k"
    basic = elasticsearch_options(ElasticsearchSettings(username="u", password=SecretStr("p")))
    assert basic["basic_auth"] == ("u", "p")
    with pytest.raises(ValueError, match="not both"):
        ElasticsearchSettings(api_key=SecretStr("k"), username="u", password=SecretStr("p"))


def test_a_ca_file_that_is_not_there_is_named_with_its_setting(tmp_path: Path):
    missing = tmp_path / "ca.pem"
    settings = ElasticsearchSettings(url="https://127.0.0.1:9200", ca_certs=missing)

    with pytest.raises(PipelineError) as raised:
        build_elasticsearch(settings)

    assert str(raised.value).startswith(f"PIPELINE_ELASTICSEARCH__CA_CERTS: no file at {missing}")


def test_stack_status_shows_a_missing_ca_file_as_the_component_s_detail(tmp_path: Path):
    missing = tmp_path / "ca.pem"
    settings = ElasticsearchSettings(url="https://127.0.0.1:9200", ca_certs=missing)

    with patch("pipeline.stack.health.port_answers", return_value=True):
        health = elasticsearch_health(settings)

    assert not health.ok
    assert f"no file at {missing}" in health.detail


def test_stack_status_shows_the_url_without_its_password_and_checks_its_host():
    settings = ElasticsearchSettings(url="http://user:pa55w0rd@127.0.0.1:9200")

    with patch("pipeline.stack.health.port_answers", return_value=False) as knocked:
        health = elasticsearch_health(settings)

    knocked.assert_called_once_with("127.0.0.1", 9200)  # the host, not "user:pa55w0rd@..."
    assert health.address == "http://[REDACTED]@127.0.0.1:9200"


def test_a_web_server_on_the_elasticsearch_port_is_one_short_line_not_its_page():
    from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
    from elasticsearch import NotFoundError

    from pipeline.stack.health import _short

    meta = ApiResponseMeta(404, "1.1", HttpHeaders(), 0.0, NodeConfig("http", "127.0.0.1", 9200))
    page = "<!DOCTYPE HTML>\n<html lang='en'>\n" + "<p>x</p>\n" * 100

    assert _short(NotFoundError(page, meta, page)) == (
        "it answered HTTP 404, not as Elasticsearch does"
    )


# --- an answer that is no JSON: another server without a content type -----------------------


def _unreadable(raw: bytes):
    """The error elastic-transport raises for an answer it took for JSON (no content type)."""
    from elastic_transport import JsonSerializer, SerializationError

    try:
        JsonSerializer().loads(raw)
    except SerializationError as error:
        return error
    raise AssertionError("the answer parsed")


def test_a_plain_text_answer_is_said_to_be_from_a_server_that_is_not_elasticsearch():
    # A Prometheus metrics port (another shipper's) answers PUT so, without a content type.
    error = _unreadable(b"# HTTP 405 Method Not Allowed\n")

    assert foreign_answer("http://u:hunter2@127.0.0.1:9110", error) == (
        "the server at http://u:[REDACTED]@127.0.0.1:9110 did not answer as Elasticsearch "
        "(# HTTP 405 Method Not Allowed); check PIPELINE_ELASTICSEARCH__URL (Elasticsearch's "
        "address, without a path)"
    )
    assert "did not answer as Elasticsearch" in unreadable("http://127.0.0.1:9110", error)


def test_bytes_that_are_not_text_are_not_elasticsearchs_either():
    line = foreign_answer("http://127.0.0.1:9", _unreadable(b"\xff\xfe\xfa binary"))

    assert line is not None and "did not answer as Elasticsearch" in line


def test_a_json_object_that_does_not_parse_is_elasticsearchs_own_answer():
    # A document indexed with a byte order mark before its JSON: the search says which one.
    raw = b'{"hits":{"hits":[{"_id":"c","_source":\xef\xbb\xbf{"m":1}}]}}'
    error = _unreadable(raw)

    assert foreign_answer("http://127.0.0.1:9200", error) is None
    assert unreadable("http://127.0.0.1:9200", error) == (
        "the answer of the server at http://127.0.0.1:9200 is not valid JSON, as "
        "Elasticsearch's are; check PIPELINE_ELASTICSEARCH__URL (Elasticsearch's address, "
        "without a path)"
    )

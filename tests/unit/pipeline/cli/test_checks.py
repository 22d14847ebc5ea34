"""Option callbacks that check what Typer's types do not."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from pipeline.cli.checks import (
    KAFKA_STRING_BYTES,
    SHOWN_CHARACTERS,
    group_name,
    header_pairs,
    host_name,
    http_url,
    index_name,
    quoted,
    shown_path,
    topic_name,
    utf8_text,
)


def test_a_group_name_is_some_text_without_control_characters() -> None:
    assert group_name(None) is None
    assert group_name("billing-readers") == "billing-readers"
    with pytest.raises(typer.BadParameter, match="must not be empty"):
        group_name("  ")
    with pytest.raises(typer.BadParameter, match=r"holds a control character \('\\x01' at 5\)"):
        group_name("rve-\x01")


def test_a_group_name_that_is_not_utf8_is_refused() -> None:
    # From argv's bytes (surrogates): confluent-kafka's consumer aborted the process.
    with pytest.raises(typer.BadParameter, match="is not UTF-8 text"):
        group_name("rvi-\udcff")


def test_a_group_name_longer_than_kafka_takes_is_refused() -> None:
    # 100 kB: record timed out reading its offsets, logs ship reconnected for ever.
    assert group_name("g" * KAFKA_STRING_BYTES) == "g" * KAFKA_STRING_BYTES
    with pytest.raises(typer.BadParameter, match="is 32,768 bytes long; Kafka takes at most"):
        group_name("g" * (KAFKA_STRING_BYTES + 1))


def test_text_that_is_not_utf8_is_refused_and_text_is_kept() -> None:
    assert utf8_text(None) is None
    assert utf8_text("saga-1 \u00e9") == "saga-1 \u00e9"
    with pytest.raises(typer.BadParameter, match="is not UTF-8 text"):
        utf8_text("saga-\udcff")


def test_header_pairs_are_utf8_and_their_names_have_no_control_characters() -> None:
    assert header_pairs(None) is None
    assert header_pairs(["team=billing", "note=a\tb"]) == ["team=billing", "note=a\tb"]
    with pytest.raises(typer.BadParameter, match=r"'x\\udcff=1' is not UTF-8 text"):
        header_pairs(["team=billing", "x\udcff=1"])  # a name: the Kafka client crashed
    with pytest.raises(typer.BadParameter, match=r"'x=\\udcff' is not UTF-8 text"):
        header_pairs(["x=\udcff"])
    with pytest.raises(typer.BadParameter, match=r"holds a control character \('\\x1b' at 2\)"):
        header_pairs(["a\x1bb=1"])


def test_a_topic_name_kafka_refuses_is_quoted_escaped_and_cut() -> None:
    assert topic_name("requests.orders") == "requests.orders"
    with pytest.raises(typer.BadParameter, match="must not be empty"):
        topic_name("")
    with pytest.raises(typer.BadParameter) as control:
        topic_name("t\x01\n\x1b[31mred")
    assert str(control.value).startswith(r"'t\x01\n\x1b[31mred' is not a Kafka topic name")
    with pytest.raises(typer.BadParameter) as long:
        topic_name("t." + "a" * 100_000)
    said = str(long.value)
    assert len(said) < 200
    assert "(100,002 characters) is not a Kafka topic name" in said


def test_a_host_to_listen_on_is_text_without_control_characters() -> None:
    assert host_name("0.0.0.0") == "0.0.0.0"
    with pytest.raises(typer.BadParameter, match="is not UTF-8 text"):
        host_name("h\udcff")
    with pytest.raises(typer.BadParameter, match=r"holds a control character \('\\x01' at 2\)"):
        host_name("h\x01\n")


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1:99999", "expected http(s)://host[:port], got 'http://127.0.0.1:99999'"),
        ("http://:5601", "expected http(s)://host[:port]"),
        ("ftp://kibana", "expected an http:// or https:// URL, got 'ftp://kibana'"),
        ("http://u:hunter2@k:x", "got 'http://[REDACTED]@k:x'"),
    ],
)
def test_a_url_whose_port_or_scheme_is_wrong_is_refused(url: str, said: str) -> None:
    with pytest.raises(typer.BadParameter) as refused:
        http_url(url)
    assert said in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_a_url_with_a_host_and_a_port_is_kept() -> None:
    assert http_url("https://kibana.example:5601/base") == "https://kibana.example:5601/base"
    assert http_url(None) is None


@pytest.mark.parametrize(
    "alias", ["Logs", "lo gs", "a*b", "a:b", "a,b", "a#b", "-logs", "_logs", "+logs", ".", ".."]
)
def test_an_alias_elasticsearch_would_refuse_as_an_index_name_is_refused(alias: str) -> None:
    with pytest.raises(typer.BadParameter, match="is not an Elasticsearch index name"):
        index_name(alias)


def test_an_alias_with_a_control_character_or_too_long_is_refused() -> None:
    assert index_name("pipeline-logs") == "pipeline-logs"
    with pytest.raises(typer.BadParameter, match=r"holds a control character \('\\x01' at 4\)"):
        index_name("rvd\x01")
    assert index_name("a" * 244) == "a" * 244  # its daily indices: 255 bytes
    with pytest.raises(typer.BadParameter, match="is 245 bytes long; at most 244"):
        index_name("a" * 245)


def test_values_and_paths_in_messages_are_escaped_when_they_would_garble_a_line() -> None:
    assert quoted("abc") == "'abc'"
    assert quoted("a" * 100) == repr("a" * SHOWN_CHARACTERS) + "... (100 characters)"
    assert shown_path(Path("/tmp/in.ndjson")) == "/tmp/in.ndjson"
    assert shown_path("/tmp/in\x01\n.ndjson") == r"'/tmp/in\x01\n.ndjson'"
    assert shown_path("/tmp/\udcff") == r"'/tmp/\udcff'"

"""`pipeline logs search` against documents in a test alias of the real Elasticsearch."""

import contextlib
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
from confluent_kafka import TopicPartition

from consumers.log_batch import SourceRecord, plan_batch
from pipeline.kafka.clients import build_consumer, build_producer
from pipeline.logs.schema import ensure_index_template
from pipeline.ports import free_port
from tests.support.logs import log_alias, log_document
from tests.support.stack_cli import PIPELINE, run_pipeline
from tests.support.tls_server import tls_server as serving_tls


@pytest.fixture
def indexed(elasticsearch_client):
    """Five documents of two services, levels and correlation ids, in an alias of their own."""
    documents = [
        log_document(0, service="orders", message="payment timeout for order o-1"),
        log_document(1, service="orders", log={"level": "error", "logger": "orders.pay"},
                     pipeline={"correlation_id": "req-7"}),
        log_document(2, service="billing", log={"level": "warning", "logger": "billing"},
                     pipeline={"correlation_id": "req-7"}),
        log_document(3, service="billing"),
        log_document(4, service="orders", log={"level": "debug", "logger": "orders"}),
    ]  # fmt: skip
    with log_alias(elasticsearch_client) as alias:
        ensure_index_template(elasticsearch_client, alias=alias)
        records = [
            SourceRecord("logs", 0, n, None, json.dumps(d).encode())
            for n, d in enumerate(documents)
        ]
        actions, _ = plan_batch(records, alias=alias)
        for action in actions:
            elasticsearch_client.index(index=action.index, id=action.id, document=action.source)
        elasticsearch_client.indices.refresh(index=alias)
        yield alias, documents


def _search(alias, *args):
    return run_pipeline("logs", "search", *args, env={"PIPELINE_LOGS__INDEX_ALIAS": alias})


def test_ndjson_prints_each_matching_document_oldest_first(indexed):
    alias, documents = indexed
    result = _search(alias, "*", "--output", "ndjson")
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert printed == documents


def test_a_lucene_query_and_filters_narrow_the_result(indexed):
    alias, _ = indexed
    by_text = _search(alias, "message:timeout", "-o", "ndjson")
    assert [json.loads(x)["message"] for x in by_text.stdout.splitlines()] == [
        "payment timeout for order o-1"
    ]
    by_correlation = _search(alias, "--correlation-id", "req-7", "-o", "ndjson")
    assert [json.loads(x)["labels"]["n"] for x in by_correlation.stdout.splitlines()] == ["1", "2"]
    by_service_level = _search(
        alias, "--service", "orders", "--level", "error,debug", "-o", "ndjson"
    )
    assert [json.loads(x)["labels"]["n"] for x in by_service_level.stdout.splitlines()] == [
        "1", "4",
    ]  # fmt: skip
    none_since = _search(alias, "--since", "2000-01-01T00:00:00Z", "--level", "critical")
    assert none_since.returncode == 0 and none_since.stdout == ""
    assert "match" in none_since.stderr


def test_the_table_shows_newest_first_with_level_service_and_correlation_id(indexed):
    alias, _ = indexed
    result = _search(alias, "--correlation-id", "req-7")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "req-7" in line]
    assert len(rows) == 2
    assert "billing" in rows[0] and "warning" in rows[0]  # newest first
    assert "orders" in rows[1] and "error" in rows[1]


def test_a_bad_query_prints_elasticsearchs_reason_in_one_line(indexed):
    alias, _ = indexed
    result = _search(alias, "message:(timeout")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: bad query: Failed to parse query [message:(timeout]")
    assert "Encountered" in lines[0]


def test_a_bad_query_is_an_error_even_when_no_line_falls_in_the_time_window(indexed):
    alias, _ = indexed
    # No line after 2999: Elasticsearch skips every shard, and would not parse the query there.
    result = _search(alias, "message:(", "--since", "2999-01-01T00:00:00Z")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: bad query: Failed to parse query [message:(]")
    assert "Exception" not in result.stderr


def test_a_bad_since_is_a_usage_error(indexed):
    alias, _ = indexed
    result = _search(alias, "--since", "yesterday")
    assert result.returncode == 2
    assert "expected a duration such as 15m" in result.stderr


# --- ship ---------------------------------------------------------------------------------------


def test_ship_refuses_a_logs_or_dead_letter_topic_that_does_not_exist_in_one_line(
    new_topic, unique_name
):
    logs_topic, missing = new_topic(1), unique_name("missing-dlq")

    result = run_pipeline(
        "logs", "ship", "--until-idle", "1",
        env={"PIPELINE_LOGS__TOPIC": logs_topic, "PIPELINE_LOGS__DLQ_TOPIC": missing},
        timeout=120,
    )  # fmt: skip

    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: topic {missing} does not exist on Kafka at 127.0.0.1:9092 (create it first, "
        "e.g. with `pipeline topics apply`)"
    )


def test_ship_with_a_json_console_says_a_missing_topic_in_json_too(unique_name):
    # Its logging was set up after the topic check: the check's lines were plain text.
    missing = unique_name("missing-logs")

    result = run_pipeline(
        "logs", "ship", "--until-idle", "1",
        env={"PIPELINE_LOGS__TOPIC": missing, "PIPELINE_LOGS__CONSOLE": "json"},
        timeout=120,
    )  # fmt: skip

    assert result.returncode == 2, result.stderr
    documents = [json.loads(line) for line in result.stderr.strip().splitlines()]
    errors = [d["message"] for d in documents if d["log"]["level"] == "error"]
    assert len(errors) == 1 and f"topics {missing}, {missing}.dlq do not exist" in errors[0]
    # Nothing was sent to the missing topic (the handler would say what it could not deliver).
    assert not [d for d in documents if d["log"]["logger"] == "pipeline.logs.handler"]


def test_ship_says_in_one_line_that_elasticsearch_refused_its_index_template(
    new_topic, elasticsearch_client
):
    # The default alias's template matches <alias>-*, so that of <alias>-b overlaps it at the
    # same priority: Elasticsearch refuses it (400).
    with log_alias(elasticsearch_client) as alias:
        ensure_index_template(elasticsearch_client, alias=alias)

        result = run_pipeline(
            "logs", "ship", "--until-idle", "1",
            env={
                "PIPELINE_LOGS__TOPIC": new_topic(1),
                "PIPELINE_LOGS__DLQ_TOPIC": new_topic(1),
                "PIPELINE_LOGS__INDEX_ALIAS": f"{alias}-b",
            },
            timeout=120,
        )  # fmt: skip

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Elasticsearch refused the index template (400): "), last
    assert f"[{alias}-b]" in last


def test_ship_to_an_https_port_over_http_is_one_line_at_once_not_a_wait(new_topic, tmp_path):
    # Elasticsearch with TLS hangs up on plain HTTP without a word: the shipper took that for
    # an outage and waited for ever (search said what it was at once).
    with serving_tls(tmp_path / "tls") as (address, _ca):
        result = run_pipeline(
            "logs", "ship",
            env={
                "PIPELINE_LOGS__TOPIC": new_topic(1),
                "PIPELINE_LOGS__DLQ_TOPIC": new_topic(1),
                "PIPELINE_ELASTICSEARCH__URL": f"http://{address}",
            },
            timeout=60,
        )  # fmt: skip

    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot reach Elasticsearch at http://{address} ("), last
    assert "an HTTPS port? then PIPELINE_ELASTICSEARCH__URL starts with https://" in last, last


def test_ship_behind_a_proxy_that_hangs_up_waits_as_for_an_outage(new_topic):
    # A proxy in front of an Elasticsearch that is down accepts and closes at once, as an HTTPS
    # port does to plain HTTP; but it answers no TLS handshake: an outage, waited out.
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def hang_up() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                listener.accept()[0].close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        result = run_pipeline(
            "logs", "ship", "--until-idle", "3",
            env={
                "PIPELINE_LOGS__TOPIC": new_topic(1),
                "PIPELINE_LOGS__DLQ_TOPIC": new_topic(1),
                "PIPELINE_ELASTICSEARCH__URL": f"http://127.0.0.1:{listener.getsockname()[1]}",
            },
            timeout=120,
        )  # fmt: skip
    finally:
        stop.set()
        thread.join(5)
        listener.close()

    assert result.returncode == 2, result.stderr
    assert "an HTTPS port?" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "unreachable for 3 s (the --until-idle time)" in last, last


def test_a_record_of_nearly_a_megabyte_that_is_not_a_log_line_is_dead_lettered_whole(
    pipeline_settings, elasticsearch_client, new_topic, consumer_group
):
    # It fits the logs topic (max.message.bytes 1048588); librdkafka's own limit for the
    # dead-letter producer (about 1 MB) used to refuse it, and the shipper died on it.
    logs_topic, dlq_topic = new_topic(1), new_topic(1)
    value = b"not json " + b"x" * 1_040_000
    producer = build_producer(pipeline_settings.kafka, **{"message.max.bytes": 2_000_000})
    producer.produce(logs_topic, key=b"svc", value=value)
    assert producer.flush(30) == 0

    with log_alias(elasticsearch_client) as alias:
        result = run_pipeline(
            "logs", "ship", "--until-idle", "3", "--group", consumer_group,
            env={"PIPELINE_LOGS__TOPIC": logs_topic, "PIPELINE_LOGS__DLQ_TOPIC": dlq_topic,
                 "PIPELINE_LOGS__INDEX_ALIAS": alias},
            timeout=180,
        )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    consumer = build_consumer(pipeline_settings.kafka, consumer_group + "-dlq")
    consumer.assign([TopicPartition(dlq_topic, 0, 0)])
    try:
        letters = [m for m in consumer.consume(10, timeout=10) if m.error() is None]
    finally:
        consumer.close()
    [letter] = letters
    assert letter.value() == value
    assert dict(letter.headers())["dlq.reason"] == b"undecodable"


def test_a_search_of_an_alias_with_no_index_says_so_not_only_that_nothing_matched(unique_name):
    alias = unique_name("no-such-alias").lower()

    result = _search(alias, "anything")

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: no log index behind {alias} on Elasticsearch: is PIPELINE_LOGS__INDEX_ALIAS "
        "right, and has `pipeline logs ship` run?"
    ]


def test_the_shipper_serves_its_counters_and_lag_as_prometheus_metrics(
    pipeline_settings, elasticsearch_client, new_topic, consumer_group
):
    # Its lag and throughput were only in its log lines: nothing to scrape or alert on.
    logs_topic, dlq_topic = new_topic(1), new_topic(1)
    producer = build_producer(pipeline_settings.kafka)
    for n in range(20):
        producer.produce(logs_topic, value=json.dumps(log_document(n)).encode())
    producer.produce(logs_topic, value=b"not json")
    assert producer.flush(30) == 0
    port = free_port()
    with log_alias(elasticsearch_client) as alias:
        shipping = subprocess.Popen(
            [PIPELINE, "logs", "ship", "--group", consumer_group, "--metrics-port", str(port)],
            env={**os.environ, "PIPELINE_LOGS__TOPIC": logs_topic,
                 "PIPELINE_LOGS__DLQ_TOPIC": dlq_topic, "PIPELINE_LOGS__INDEX_ALIAS": alias,
                 "PIPELINE_LOGS__METRICS_INTERVAL_S": "1"},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            scraped = ""
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as answer:
                        scraped = answer.read().decode()
                except OSError:
                    pass
                if _scraped(scraped, "shipped_total") >= 20 and "_lag 0.0" in scraped:
                    break
                time.sleep(0.5)
        finally:
            shipping.terminate()
            _, stderr = shipping.communicate(timeout=60)

    # Its own log lines go to that topic too, and are shipped with the 20.
    assert _scraped(scraped, "shipped_total") >= 20, stderr[-2000:]
    assert _scraped(scraped, "dead_lettered_total") == 1
    assert "pipeline_log_shipper_lag 0.0" in scraped
    assert shipping.returncode == 0


def _scraped(text: str, name: str) -> float:
    found = re.search(rf"^pipeline_log_shipper_{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else -1.0


def _index(client, alias, documents):
    records = [
        SourceRecord("logs", 0, n, None, json.dumps(d).encode()) for n, d in enumerate(documents)
    ]
    actions, _ = plan_batch(records, alias=alias)
    for action in actions:
        client.index(index=action.index, id=action.id, document=action.source)
    client.indices.refresh(index=alias)


def _lines_within(path, count, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines()
        if len(lines) >= count:
            return lines
        time.sleep(0.5)
    return path.read_text().splitlines()


def test_follow_prints_every_line_of_a_burst_larger_than_its_limit_and_those_after(
    elasticsearch_client, tmp_path
):
    with log_alias(elasticsearch_client) as alias:
        ensure_index_template(elasticsearch_client, alias=alias)
        _index(elasticsearch_client, alias, [log_document(0)])
        out = tmp_path / "follow.ndjson"
        with out.open("w") as sink:
            follower = subprocess.Popen(
                [str(PIPELINE), "logs", "search", "--follow", "-o", "ndjson", "--limit", "10"],
                stdout=sink,
                stderr=subprocess.PIPE,
                env={**os.environ, "PIPELINE_LOGS__INDEX_ALIAS": alias},
            )
            try:
                assert len(_lines_within(out, 1)) == 1
                _index(elasticsearch_client, alias, [log_document(n) for n in range(1, 26)])
                burst = _lines_within(out, 26)
                _index(elasticsearch_client, alias, [log_document(n) for n in range(26, 29)])
                after = _lines_within(out, 29)
            finally:
                follower.terminate()
                follower.wait(timeout=30)

    assert len(burst) >= 26, f"the burst of 25 stopped at {len(burst) - 1}"
    numbers = [int(json.loads(line)["labels"]["n"]) for line in after]
    assert sorted(numbers) == list(range(29))  # each once, the lines after the burst too


def test_follow_after_a_cut_goes_on_from_the_lines_shown_not_the_older_ones_left_out(
    elasticsearch_client, tmp_path
):
    from datetime import UTC, datetime, timedelta

    def at(n, moment):
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        return log_document(n, **{"@timestamp": stamp})

    began = datetime.now(UTC) - timedelta(seconds=5)
    with log_alias(elasticsearch_client) as alias:
        ensure_index_template(elasticsearch_client, alias=alias)
        _index(elasticsearch_client, alias, [at(n, began + timedelta(milliseconds=20 * n))
                                             for n in range(30)])  # fmt: skip
        out = tmp_path / "follow.ndjson"
        with out.open("w") as sink:
            follower = subprocess.Popen(
                [str(PIPELINE), "logs", "search", "--follow", "-o", "ndjson", "--limit", "10",
                 "--since", "1m"],
                stdout=sink,
                stderr=subprocess.PIPE,
                env={**os.environ, "PIPELINE_LOGS__INDEX_ALIAS": alias},
            )  # fmt: skip
            try:
                assert len(_lines_within(out, 10)) == 10
                time.sleep(3)  # a few polls
                _index(elasticsearch_client, alias, [log_document(n) for n in range(30, 33)])
                lines = _lines_within(out, 13)
                time.sleep(2)
                lines = out.read_text().splitlines()
            finally:
                follower.terminate()
                follower.wait(timeout=30)

    numbers = [int(json.loads(line)["labels"]["n"]) for line in lines]
    assert numbers == [*range(20, 30), 30, 31, 32]  # the newest ten, then what came after


def test_follow_after_a_cut_does_not_print_lines_of_the_oldest_shown_lines_millisecond(
    elasticsearch_client, tmp_path
):
    # Lines shipped in one bulk share a millisecond: the first poll printed those of them left
    # out of the first page (seq 2899 after 2900-2999), older than every line shown.
    from datetime import UTC, datetime, timedelta

    stamp = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    with log_alias(elasticsearch_client) as alias:
        ensure_index_template(elasticsearch_client, alias=alias)
        _index(elasticsearch_client, alias,
               [log_document(n, **{"@timestamp": f"{stamp}Z"}) for n in range(30)])  # fmt: skip
        out = tmp_path / "follow.ndjson"
        with out.open("w") as sink:
            follower = subprocess.Popen(
                [str(PIPELINE), "logs", "search", "--follow", "-o", "ndjson", "--limit", "10",
                 "--since", "1m"],
                stdout=sink,
                stderr=subprocess.PIPE,
                env={**os.environ, "PIPELINE_LOGS__INDEX_ALIAS": alias},
            )  # fmt: skip
            try:
                shown = _lines_within(out, 10)
                time.sleep(3)  # a few polls
                _index(elasticsearch_client, alias, [log_document(n) for n in range(30, 33)])
                _lines_within(out, 13)
                time.sleep(2)
                lines = out.read_text().splitlines()
            finally:
                follower.terminate()
                follower.wait(timeout=30)

    numbers = [int(json.loads(line)["labels"]["n"]) for line in lines]
    first = [int(json.loads(line)["labels"]["n"]) for line in shown[:10]]
    assert numbers == [*first, 30, 31, 32], numbers  # the first page, then what came after

"""``pipeline consume`` and a message whose header name is not UTF-8 text, sent with kcat
(confluent-kafka cannot send one, nor read it: its ``Message.headers()`` failed with a
SystemError on a small topic, and once its call site was warm, returned a list holding a NULL
that crashed the process, exit 139).

The message is printed with ``error`` and ``headers`` null, the read goes on, exit 0.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from tests.support.stack_cli import run_pipeline

BAD_NAME = b"x-bad\xff\xfe"


def _kcat(settings, topic, lines: bytes, headers: list[bytes]) -> None:
    """Send ``lines`` (one message each, key before the first ``:``) with ``headers``, byte for
    byte: kcat sends header names as they are."""
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat is needed (make test installs it: apt-get install kcat)"
    args: list[str | bytes] = [kcat, "-P", "-b", settings.kafka.bootstrap_servers, "-t", topic]
    args += ["-K:"]
    for header in headers:
        args += ["-H", header]
    subprocess.run(args, input=lines, check=True, timeout=120)


def _good(settings, topic, first: int, count: int) -> None:
    """``count`` structured CloudEvents (ids ``e<n>``), so that each has its own id."""
    events = b"".join(
        b"k%d:" % n
        + json.dumps(
            {"specversion": "1.0", "id": f"e{n}", "source": "/t", "type": "t", "data": {"n": n}}
        ).encode()
        + b"\n"
        for n in range(first, first + count)
    )
    _kcat(settings, topic, events, [b"content-type=application/cloudevents+json"])


def _bad(settings, topic) -> None:
    _kcat(settings, topic, b'k:{"a":1}\n', [b"ce_id=x1", BAD_NAME + b"=1"])


def _consumed(topic):
    result = run_pipeline("consume", topic, "--from-beginning")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, (result.returncode, result.stderr)
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def _assert_shown_without_headers(record, topic, offset):
    assert record["topic"] == topic and (record["partition"], record["offset"]) == (0, offset)
    assert record["key"] == "k"
    assert record["headers"] is None
    assert record["error"].startswith('header name "x-bad\\xff\\xfe": not UTF-8 text')
    assert record["value_base64"] == "eyJhIjoxfQ=="  # {"a":1}


def test_a_header_name_that_is_not_utf8_is_shown_and_the_read_goes_on(
    pipeline_settings, new_topic, unique_name
):
    topic = new_topic(partitions=1, name=f"fxc.{unique_name('badhdr')}")
    _good(pipeline_settings, topic, 0, 1)
    _bad(pipeline_settings, topic)
    _good(pipeline_settings, topic, 1, 1)

    records, stderr = _consumed(topic)

    assert [record["offset"] for record in records] == [0, 1, 2]
    assert [records[0].get("id"), records[2].get("id")] == ["e0", "e1"]
    assert "error" not in records[0] and "error" not in records[2]
    assert records[2]["data"] == {"n": 1}
    _assert_shown_without_headers(records[1], topic, 1)
    assert f"warning: {topic}[0]@1: header name" in stderr
    assert "printed 3 messages, 1 of them not valid events (1 with headers that could not" in stderr


def test_many_messages_around_a_header_name_that_is_not_utf8_do_not_crash_it(
    pipeline_settings, new_topic, unique_name
):
    # Python specializes a call site after a few calls, and then stopped reporting the
    # failure: the bad message comes after enough good ones, and many follow it.
    topic = new_topic(partitions=1, name=f"fxc.{unique_name('badhdr_many')}")
    _good(pipeline_settings, topic, 0, 100)
    _bad(pipeline_settings, topic)
    _good(pipeline_settings, topic, 100, 50_000)

    records, stderr = _consumed(topic)

    assert len(records) == 50_101
    _assert_shown_without_headers(records[100], topic, 100)
    good = records[:100] + records[101:]
    assert [record.get("id") for record in good] == [f"e{n}" for n in range(50_100)]
    assert not any("error" in record for record in good)
    assert stderr.count("warning:") == 1

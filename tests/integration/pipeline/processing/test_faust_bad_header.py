"""A message whose header name is not UTF-8 is dead-lettered; the processor goes on.

aiokafka, the Kafka client under Faust, decodes every header name as UTF-8 while it reads a
fetched batch, and one name that is not made it raise in the middle of the batch: Faust's
consumer died, and so did every member of the group that took the partition, at every restart.
kcat writes such a name (confluent-kafka cannot). Between two good events of one key, it must be
dead-lettered as ``undecodable`` while both good events are applied, in order; its dead letter
must be readable (``pipeline dlq inspect``) and redrivable (``pipeline dlq redrive``).

Run with synchronous handlers (``sync``) and with ``async def`` ones (``async``, the group
path first).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.settings import PipelineSettings
from pipeline.topics.spec import dlq_name
from tests.support.processor_runs import (
    ProcessorProcess,
    effect_event,
    effect_rows,
    effects_database,
    effects_env,
    produce,
    wait_for_effects,
    wait_until,
)
from tests.support.stack_cli import run_pipeline

BAD_NAME = b"x-bad\xff\xfe"


def kcat_bad_header_message(bootstrap: str, topic: str) -> None:
    """The user's reproduction: a valid binary-mode event, plus a header whose name is not
    UTF-8 (arguments as bytes: the name must reach kcat as it is)."""
    command = [
        b"kcat",
        b"-b",
        bootstrap.encode(),
        b"-P",
        b"-t",
        topic.encode(),
        b"-K:",
        b"-H",
        b"ce_id=x1",
        b"-H",
        b"ce_source=/kcat",
        b"-H",
        b"ce_type=com.example.deposit",
        b"-H",
        b"ce_specversion=1.0",
        b"-H",
        BAD_NAME + b"=1",
    ]
    line = b'poison-g:{"account":"poison-g","seq":1,"amount":5}\n'
    done = subprocess.run(command, input=line, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def inspect(topic: str) -> list[dict[str, Any]]:
    shown = run_pipeline("dlq", "inspect", topic, "--output", "ndjson", timeout=120)
    assert shown.returncode == 0, shown.stderr
    return [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("handler", ["sync", "async"])
def test_a_header_name_that_is_not_utf8_is_dead_lettered_and_the_processor_goes_on(
    handler: str,
    pipeline_settings: PipelineSettings,
    new_topic: Callable[..., str],
    postgres_url: str,
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:8]
    topic = new_topic(partitions=1, name=f"fxh.bad-header-{run}")
    new_topic(partitions=1, name=dlq_name(topic))
    group = f"fxh-bad-header-{run}"
    database = effects_database(postgres_url)
    before, after = effect_event("g", 0), effect_event("g", 1)
    produce(pipeline_settings, topic, [before])
    kcat_bad_header_message(pipeline_settings.kafka.bootstrap_servers, topic)
    produce(pipeline_settings, topic, [after])

    env = effects_env(topic=topic, group=group, database_url=postgres_url, EFFECTS_HANDLER=handler)
    process = ProcessorProcess(env, tmp_path / "processor.log")
    try:
        wait_for_effects(database, 2, [process])
        assert [(row[1], row[2], row[3]) for row in effect_rows(database)] == [
            ("g", 0, before.id),
            ("g", 1, after.id),
        ]

        def one_dead_letter() -> list[dict[str, Any]] | None:
            process.assert_alive()
            letters = inspect(topic)
            return letters or None

        (letter,) = wait_until(one_dead_letter, timeout_s=90, what="the dead letter", every_s=1)
        assert (letter["reason"], letter["key"], letter["original_offset"]) == (
            "undecodable",
            "poison-g",
            1,
        ), letter
        assert "header name is not UTF-8: b'x-bad\\xff\\xfe'" in letter["error_message"], letter
        assert letter["event_id"] == "x1"
        assert json.loads(letter["value"]) == {"account": "poison-g", "seq": 1, "amount": 5}
        # The name travels escaped (Kafka's Python clients send text names only).
        assert ["x-bad\\xff\\xfe", "1"] in letter["headers"], letter["headers"]
        process.assert_alive()

        # A redrive sends it back with the escaped name: now an event like any other.
        sent = run_pipeline("dlq", "redrive", topic, "--yes", timeout=120)
        assert sent.returncode == 0, sent.stderr
        assert "redriven 1 dead letter" in sent.stderr, sent.stderr
        wait_for_effects(database, 3, [process])
        assert [(row[1], row[2]) for row in effect_rows(database)][2] == ("poison-g", 1)
        assert process.terminate() == 0, process.tail()
        assert "Traceback" not in process.log(), process.tail()
    finally:
        process.stop_quietly()

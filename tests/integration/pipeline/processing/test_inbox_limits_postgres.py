"""Ids and keys PostgreSQL's inbox tables cannot hold as they are, against a real processor.

An event id of 300 characters (the column keeps 255) and an event whose key is 8,000 random
bytes (a B-tree index entry holds about 2.7 KB) used to stop their partition for good: the
processor retried noting their dead letters without end, and committed nothing past them. Now
the first is dead-lettered at once as ``undecodable``, the second's key is parked under its
digest (its next event dead-lettered behind it), and the partition goes on and commits.
"""

from __future__ import annotations

import json
import random
import string

from pipeline.topics.catalogue import dlq_name
from tests.support.processor_runs import (
    ProcessorProcess,
    committed_total,
    effect_event,
    effect_rows,
    effects_database,
    effects_env,
    produce,
    wait_for_effects,
    wait_until,
)
from tests.support.stack_cli import run_pipeline


def test_a_long_id_and_a_huge_parked_key_do_not_stop_the_partition_on_postgres(
    pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
):
    topic = new_topic(partitions=1, prefix="effects")
    new_topic(partitions=1, name=dlq_name(topic))
    database = effects_database(postgres_url)
    huge = "".join(random.Random(3).choices(string.ascii_letters, k=8_000))
    long_id = effect_event("long-id", 0).model_copy(update={"id": "i" * 300})
    # The effects table keeps keys of 255 characters: the handler fails on the huge key.
    huge_first, huge_next = effect_event(huge, 0), effect_event(huge, 1)
    after = effect_event("after", 0)
    produce(pipeline_settings, topic, [long_id, huge_first, huge_next, after])
    env = effects_env(
        topic=topic,
        group=consumer_group,
        database_url=postgres_url,
        PIPELINE_PROCESSING__RETRY__MAX_ATTEMPTS=2,
        PIPELINE_PROCESSING__RETRY__INITIAL_BACKOFF_S=0.05,
    )
    processor = ProcessorProcess(env, tmp_path / "processor.log")
    try:
        wait_for_effects(database, 1, [processor])
        assert [row[1] for row in effect_rows(database)] == ["after"]

        def three_dead_letters():
            processor.assert_alive()
            shown = run_pipeline("dlq", "inspect", topic, "-o", "ndjson", timeout=120)
            assert shown.returncode == 0, shown.stderr
            letters = [json.loads(line) for line in shown.stdout.splitlines()]
            return letters if len(letters) >= 3 else None

        letters = wait_until(three_dead_letters, timeout_s=90, what="3 dead letters", every_s=1)
        assert [letter["reason"] for letter in letters] == [
            "undecodable",
            "retries_exhausted",
            "key_parked",
        ]
        assert "the event id is 300 characters long" in letters[0]["error_message"]
        assert letters[2]["parked_by"] == huge_first.id
        wait_until(
            lambda: committed_total(pipeline_settings, topic, consumer_group, 1) == 4,
            timeout_s=60,
            what="the group's commit past the four records",
        )
        assert processor.terminate() == 0, processor.tail()
        assert "cannot note dead letter" not in processor.log(), processor.tail()
    finally:
        processor.stop_quietly()

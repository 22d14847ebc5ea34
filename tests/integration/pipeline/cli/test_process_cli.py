"""``pipeline process`` refuses to start with one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import pytest

from pipeline.topics.catalogue import dlq_name
from tests.support.processor_runs import SPEC, effects_env
from tests.support.stack_cli import run_pipeline


def refused(result) -> str:
    """The error line of a refused start: exit code 2, no traceback, the error on one line.

    The processor's own log lines (the database migration) may come before it.
    """
    stderr = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, stderr)
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert lines and lines[-1].startswith("error:"), stderr
    assert sum(line.startswith("error:") for line in lines) == 1, stderr
    return lines[-1]


def test_a_missing_topic_is_one_line_that_says_to_apply_the_topics(
    unique_name, consumer_group, postgres_url
):
    topic = unique_name("absent")
    env = effects_env(topic=topic, group=consumer_group, database_url=postgres_url)
    line = refused(run_pipeline("process", SPEC, env=env, timeout=120))
    assert line == (
        f"error: topics {topic}, {dlq_name(topic)} do not exist on Kafka at 127.0.0.1:9092 "
        "(create them first, e.g. with `pipeline topics apply`)"
    )


def test_a_missing_dead_letter_topic_is_named_alone(new_topic, consumer_group, postgres_url):
    topic = new_topic(partitions=1, prefix="nodlq")
    env = effects_env(topic=topic, group=consumer_group, database_url=postgres_url)
    line = refused(run_pipeline("process", SPEC, env=env, timeout=120))
    assert line == (
        f"error: topic {dlq_name(topic)} does not exist on Kafka at 127.0.0.1:9092 "
        "(create it first, e.g. with `pipeline topics apply`)"
    )


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("tests.support.effects_processor", "expected MODULE:PROCESSOR"),
        (":processor", "expected MODULE:PROCESSOR"),
        ("tests.support.no_such_module:processor", "cannot import tests.support.no_such_module"),
        ("tests.support.effects_processor:nothing_here", "is nothing, not a"),
        ("tests.support.effects_processor:effects", "is Table, not a"),
    ],
)
def test_a_bad_processor_spec_is_one_line(spec, says, unique_name, consumer_group):
    # No database, no topic: the spec is checked before anything connects.
    env = effects_env(
        topic=unique_name("unused"),
        group=consumer_group,
        database_url="postgresql+psycopg://nobody@127.0.0.1:1/none",
    )
    line = refused(run_pipeline("process", spec, env=env, timeout=120))
    assert says in line, line

"""``pipeline process`` refuses to start with one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import os

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
        ("tests.support.effects_processor:nothing_here", "effects_processor has no nothing_here"),
        ("tests.support.effects_processor:effects", "is of type Table, not a"),
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


@pytest.mark.parametrize(
    ("source", "says"),
    [
        (
            "import json\n\nraise RuntimeError('no config')\n",
            "error: importing broken_module failed: RuntimeError: no config (at {path}:3)",
        ),
        ("def f(:\n", "error: importing broken_module failed: SyntaxError: invalid syntax"),
        (
            "from pipeline.processing.processor import Processor\n"
            "processor = Processor('no-handlers')\n",
            "error: processor no-handlers has no handlers: register one with "
            "@processor.handler(TOPIC) before it is run",
        ),
    ],
    ids=["raises on import", "syntax error", "no handlers"],
)
def test_a_processor_module_that_cannot_run_is_one_line(source, says, tmp_path, consumer_group):
    module = tmp_path / "broken_module.py"
    module.write_text(source)
    env = effects_env(
        topic="unused.topic",
        group=consumer_group,
        database_url="postgresql+psycopg://nobody@127.0.0.1:1/none",
    )
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])

    result = run_pipeline("process", "broken_module:processor", env=env, timeout=120)

    assert result.returncode == 2, result.stderr
    assert refused(result).startswith(says.format(path=module)), result.stderr

"""A processor whose start hook fails exits with one line naming the hook, and code 2."""

from __future__ import annotations

from pipeline.topics.catalogue import dlq_name
from tests.support.processor_runs import effects_env
from tests.support.stack_cli import run_pipeline

SPEC = "tests.support.failing_start_processor:processor"


def test_a_failing_start_hook_is_one_line_and_exit_code_2(new_topic, consumer_group, tmp_path):
    topic = new_topic(partitions=1, prefix="failing-start")
    new_topic(partitions=1, name=dlq_name(topic))
    env = effects_env(
        topic=topic,
        group=consumer_group,
        database_url=f"sqlite:///{tmp_path / 'start.db'}",
        FAILING_START_TOPIC=topic,
    )

    result = run_pipeline("process", SPEC, env=env, timeout=120)

    stderr = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, stderr)
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [stderr.splitlines()[-1]], stderr
    assert "start hook read_settings_table failed: OperationalError" in errors[0], errors
    assert "no such table: no_such_settings_table" in errors[0], errors

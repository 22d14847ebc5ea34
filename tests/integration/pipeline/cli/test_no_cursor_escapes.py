"""Output that is not a terminal carries no terminal control codes (the cursor-show ESC[?25h)."""

from __future__ import annotations

import subprocess

from tests.support.processor_runs import (
    PIPELINE,
    REPO_ROOT,
    SPEC,
    effects_env,
    summaries,
    wait_until,
)

CURSOR_SHOW = "\x1b[?25h"


def test_process_with_piped_output_writes_no_cursor_escape(
    new_topic, consumer_group, postgres_url, tmp_path
):
    topic = new_topic(partitions=1, prefix="cursor")
    new_topic(name=f"{topic}.dlq", partitions=1)
    env = effects_env(topic=topic, group=consumer_group, database_url=postgres_url)
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    with stdout_path.open("w") as stdout, stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [PIPELINE, "process", SPEC], stdout=stdout, stderr=stderr, env=env, cwd=REPO_ROOT
        )
    try:
        # The first metrics line comes once the worker has started (its spinner finished).
        wait_until(
            lambda: summaries(stderr_path.read_text(errors="replace")),
            timeout_s=120,
            what="the processor's first metrics line",
        )
        process.terminate()
        assert process.wait(timeout=90) == 0
    finally:
        process.kill()
        process.wait(timeout=30)

    assert CURSOR_SHOW not in stdout_path.read_text(errors="replace")
    assert CURSOR_SHOW not in stderr_path.read_text(errors="replace")


def test_produce_with_piped_output_writes_no_cursor_escape(new_topic, tmp_path):
    topic = new_topic(partitions=1, prefix="cursor")
    data = tmp_path / "one.ndjson"
    data.write_text('{"a": 1}\n')

    result = subprocess.run(
        [PIPELINE, "produce", topic, str(data)], capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert CURSOR_SHOW not in result.stdout
    assert CURSOR_SHOW not in result.stderr

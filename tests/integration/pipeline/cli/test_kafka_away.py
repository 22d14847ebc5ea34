"""Kafka away: every command soon says where it connects, and ends with the same one line.

Nothing listens on 127.0.0.1:1, so no broker is needed; each command waits for its connection
timeout first, so they run side by side.
"""

from __future__ import annotations

import os
import subprocess

from tests.support.processor_runs import REPO_ROOT
from tests.support.stack_cli import PIPELINE

AWAY = "127.0.0.1:1"
COMMANDS = {
    "consume": ["consume", "some.topic"],
    "produce": ["produce", "some.topic", "-"],
    "dlq inspect": ["dlq", "inspect", "some.topic"],
    "process": ["process", "tests.support.effects_processor:processor"],
    # It ran on, logging librdkafka's connection failures (--once: two minutes, then exit 3).
    "outbox relay": ["outbox", "relay"],
    "outbox relay --once": ["outbox", "relay", "--once"],
    "topics apply": ["topics", "apply"],
    "topics list": ["topics", "list"],
    "topics list --all": ["topics", "list", "--all"],
}


def test_every_command_says_where_it_connects_then_one_line_with_the_same_words(tmp_path):
    # Each waits for its connection timeout (seconds), far beyond the 1 s after which the
    # commands say where they connect.
    env = {
        **os.environ,
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": AWAY,
        "PIPELINE_DATABASE__URL": f"sqlite:///{tmp_path / 'away.db'}",
        "PIPELINE_LOGS__CONSOLE": "text",
        "EFFECTS_TOPIC": "some.topic",
        "PYTHONPATH": str(REPO_ROOT),
    }
    running = {
        name: subprocess.Popen(
            [PIPELINE, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        for name, argv in COMMANDS.items()
    }
    results = {name: (p.wait(timeout=120), p.stderr.read()) for name, p in running.items()}

    for name, (code, stderr) in results.items():
        lines = [line for line in stderr.splitlines() if not line.startswith("database: ")]
        assert code == 2, (name, stderr)
        assert lines[0] == f"connecting to Kafka at {AWAY} ...", (name, stderr)
        assert lines[-1].startswith(f"error: Kafka at {AWAY} does not answer ("), (name, stderr)
        assert lines[-1].endswith(
            "is the broker running and PIPELINE_KAFKA__BOOTSTRAP_SERVERS right?"
        ), (name, stderr)
        assert "Traceback" not in stderr, (name, stderr)

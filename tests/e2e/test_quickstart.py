"""The README's quick start works as written, on its own files in examples/quickstart/.

The commands are read from the README (the ```sh blocks of its "Quick start" section), not
copied here, so the README cannot drift from what is tested. They run, in order, in a copy of
``examples/`` in which two names are made unique: the topic (``billing.invoices``, with its
``.dlq``) and the processor's name (``invoice-recorder``, its consumer group), so that the test
shares no topic and no group with anyone else using the stack. Everything else is the README's:
the topic file, the NDJSON events, the processor module, every command and its arguments, and
the default database (``pipeline.db`` in the stack's home, here ``PIPELINE_STACK__HOME`` is the
copy's folder, which the quick start's commands use for nothing else).

The environment keeps the logs apart too: the processor logs to a topic of the test's own
(``PIPELINE_LOGS__TOPIC``), and ``logs ship`` / ``logs search`` use an index alias and a group of
their own; the commands are unchanged.

How each README line is run: ``make stack-up`` is the ``pipeline_stack`` fixture, ``source
.venv/bin/activate`` puts the venv's ``bin`` first on PATH, ``pipeline process`` starts in the
background (it runs until SIGTERM, the reader's Ctrl-C) and the next command waits until the
processor has committed every produced event, as a reader waits for its output; every other
line runs to the end. A line of any other kind fails the test, so that a new kind of step in the
README is taught to the test instead of skipped.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from pipeline.kafka.clients import build_consumer
from pipeline.settings import PipelineSettings
from tests.support.logs import log_alias
from tests.support.stack_cli import PIPELINE

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
EXAMPLES = REPO / "examples"

TOPIC = "billing.invoices"
PROCESSOR_NAME = "invoice-recorder"

# What the sample data (examples/quickstart/invoices.ndjson) must lead to.
PRODUCED = 4
RECORDED = {
    ("inv-1001", "c-17", 12900, "EUR"),
    ("inv-1002", "c-42", 4550, "EUR"),
    ("inv-1004", "c-08", 899, "USD"),
}
REJECTED = "inv-1003"  # a negative amount: the handler raises Reject


def quickstart_blocks(readme: str, language: str) -> list[str]:
    """The ```<language> blocks of the README's "Quick start" section."""
    section = re.search(r"^## Quick start.*?$(.*?)(?=^## )", readme, re.M | re.S)
    assert section, "the README has no '## Quick start' section"
    blocks = re.findall(rf"^```{language}\n(.*?)^```", section.group(1), re.M | re.S)
    assert blocks, f"the README's quick start has no ```{language} block"
    return blocks


def quickstart_commands(readme: str) -> list[str]:
    """The command lines of the ```sh blocks in the README's quick start.

    Comments and blank lines are dropped; a line ending in a backslash goes on on the next.
    """
    blocks = quickstart_blocks(readme, "sh")
    commands: list[str] = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            if shlex.split(line, comments=True):
                commands.append(line)
    return commands


def _code(source: str) -> str:
    """``source``'s syntax tree without docstrings and ``from __future__`` imports (comments
    and layout are never in the tree)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        kept = [
            statement
            for statement in body
            if not (
                isinstance(statement, ast.Expr)
                and isinstance(statement.value, ast.Constant)
                and isinstance(statement.value.value, str)
            )
            and not (isinstance(statement, ast.ImportFrom) and statement.module == "__future__")
        ]
        node.body = kept  # type: ignore[attr-defined]
    return ast.dump(tree)


def test_the_readme_shows_the_quick_start_processor_as_it_is_in_examples():
    (shown,) = quickstart_blocks(README.read_text(), "python")
    module = (EXAMPLES / "quickstart" / "billing.py").read_text()
    assert _code(shown) == _code(module), (
        "the README's processor differs from examples/quickstart/billing.py (docstrings, "
        "comments and `from __future__` aside): copy the file's code into the README"
    )


def _copy_examples(destination: Path, renames: dict[str, str]) -> None:
    shutil.copytree(
        EXAMPLES, destination / "examples", ignore=shutil.ignore_patterns("__pycache__")
    )
    found = dict.fromkeys(renames, 0)
    for path in (destination / "examples").rglob("*"):
        if path.is_file():
            text = path.read_text()
            for old, new in renames.items():
                found[old] += text.count(old)
                text = text.replace(old, new)
            path.write_text(text)
    missing = [old for old, count in found.items() if count == 0]
    assert not missing, f"examples/ no longer mentions {missing}: update this test's names"


def _rename(command: str, renames: dict[str, str]) -> str:
    for old, new in renames.items():
        command = command.replace(old, new)
    return command


def _unfinished(settings: PipelineSettings, topic: str, group: str) -> int:
    """How many events of ``topic`` ``group`` has not committed yet (handled or dead-lettered)."""
    consumer = build_consumer(settings.kafka, f"{group}-probe")
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        wanted = [TopicPartition(topic, p) for p in partitions]
        committed = build_consumer(settings.kafka, group)
        try:
            offsets = committed.committed(wanted, timeout=30)
        finally:
            committed.close()
        left = 0
        for tp in offsets:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), 30)
            left += high - max(tp.offset, 0)
        return left
    finally:
        consumer.close()


def _wait_until_processed(
    settings: PipelineSettings,
    topic: str,
    group: str,
    processor: subprocess.Popen[bytes],
    log: Path,
) -> None:
    # A wait with a deadline, as a reader waits for the processor's output: not a timed claim.
    deadline = time.monotonic() + 120
    while _unfinished(settings, topic, group):
        assert processor.poll() is None, f"the processor exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, (
            f"the processor did not finish the quick start's events:\n{log.read_text()[-3000:]}"
        )
        time.sleep(1)


def _stop(processor: subprocess.Popen[bytes]) -> int:
    """SIGTERM (the reader's Ctrl-C); the exit code."""
    if processor.poll() is None:
        processor.send_signal(signal.SIGTERM)
    try:
        return processor.wait(timeout=90)
    except subprocess.TimeoutExpired:
        processor.kill()
        processor.wait(timeout=30)
        raise


def _recorded(database: Path) -> set[tuple[str, str, int, str]]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT invoice_id, customer_id, amount_cents, currency FROM billing_invoices"
        ).fetchall()
    return set(rows)


@pytest.fixture
def quickstart_names(kafka_admin) -> Iterator[dict[str, str]]:
    """Unique stand-ins for the quick start's topic and processor name; removed after."""
    tag = uuid.uuid4().hex[:8]
    # Short names: the processor's name is a column of the `logs search` table.
    topic, group = f"test.invoices-{tag}", f"test.recorder-{tag}"
    yield {TOPIC: topic, PROCESSOR_NAME: group}
    for future in kafka_admin.delete_topics([topic, f"{topic}.dlq"], operation_timeout=30).values():
        with suppress(Exception):  # a topic the test never created
            future.result(timeout=30)
    for future in kafka_admin.delete_consumer_groups([group]).values():
        with suppress(Exception):
            future.result(timeout=30)


def test_the_readme_quick_start_runs_as_written_on_the_examples(
    pipeline_stack,
    pipeline_settings,
    elasticsearch_client,
    new_topic,
    unique_name,
    quickstart_names,
    tmp_path,
):
    commands = quickstart_commands(README.read_text())
    # The first line, `make stack-up`, is here the pipeline_stack fixture.
    assert shlex.split(commands[0], comments=True) == ["make", "stack-up"], commands
    _copy_examples(tmp_path, quickstart_names)
    topic, group = quickstart_names[TOPIC], quickstart_names[PROCESSOR_NAME]
    venv_bin = str(Path(PIPELINE).parent)
    outputs: dict[str, subprocess.CompletedProcess[str]] = {}
    processor: subprocess.Popen[bytes] | None = None
    processor_log = tmp_path / "processor.log"

    logs_topic = new_topic(partitions=1, prefix="logs")
    new_topic(name=f"{logs_topic}.dlq", partitions=1)  # the shipper's dead letters go there
    with log_alias(elasticsearch_client) as alias:
        env = {
            **os.environ,
            "PIPELINE_LOGS__TOPIC": logs_topic,
            "PIPELINE_LOGS__INDEX_ALIAS": alias,
            "PIPELINE_LOGS__SHIPPER_GROUP": unique_name("shipper"),
        }
        env.pop("PIPELINE_DATABASE__URL", None)  # the default: pipeline.db in the stack home,
        env["PIPELINE_STACK__HOME"] = str(tmp_path)  # here the copy's folder
        try:
            for line in commands[1:]:
                argv = shlex.split(_rename(line, quickstart_names), comments=True)
                if argv == ["source", ".venv/bin/activate"]:
                    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
                    continue
                assert argv[0] == "pipeline", f"the test cannot run this quick-start line: {line}"
                assert env["PATH"].startswith(venv_bin), "`pipeline` is used before activation"
                if processor is not None and processor.poll() is None:
                    _wait_until_processed(pipeline_settings, topic, group, processor, processor_log)
                if argv[1] == "process":
                    processor = subprocess.Popen(
                        argv,
                        cwd=tmp_path,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=processor_log.open("wb"),
                    )
                    continue
                result = subprocess.run(
                    argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
                )
                assert result.returncode == 0, (line, result.stdout[-3000:], result.stderr[-3000:])
                outputs[" ".join(argv[1:3])] = result
            assert processor is not None, "the quick start never runs `pipeline process`"
        finally:
            exit_code = _stop(processor) if processor is not None else 0
    assert exit_code == 0, processor_log.read_text()[-3000:]

    # The events were produced, to the quick start's topic.
    assert "produce " + topic in outputs, list(outputs)
    consumer = build_consumer(pipeline_settings.kafka, unique_name("probe"))
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        produced = sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), 30)[1] for p in partitions
        )
    finally:
        consumer.close()
    assert produced == PRODUCED

    # The handler's effects are rows of its own table, in the default database.
    assert _recorded(tmp_path / "pipeline.db") == RECORDED

    # `pipeline dlq inspect` shows the one rejected invoice, and why.
    inspect = outputs.get("dlq inspect")
    assert inspect is not None, list(outputs)
    shown = inspect.stdout + inspect.stderr
    assert "1 dead letter shown (pending)" in shown and "by reason: rejected 1" in shown, shown
    letters = [row for row in inspect.stdout.splitlines() if REJECTED in row and "rejected" in row]
    assert len(letters) == 1, inspect.stdout  # the row of its key, with the reason

    # `pipeline logs search` finds the handler's line of every recorded invoice.
    search = outputs.get("logs search")
    assert search is not None, list(outputs)
    for invoice_id, *_ in RECORDED:
        lines = [row for row in search.stdout.splitlines() if f"invoice {invoice_id} rec" in row]
        assert len(lines) == 1 and group in lines[0], search.stdout

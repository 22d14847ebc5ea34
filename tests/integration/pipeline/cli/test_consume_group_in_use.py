"""``pipeline consume --group G`` while G is held by consumers with another assignment protocol
(a running processor: Faust's own assignor) ends with one error line instead of waiting for
ever."""

from __future__ import annotations

import threading

from pipeline.kafka.clients import build_consumer
from tests.support.stack_cli import run_pipeline, said


def test_a_group_held_with_another_protocol_is_one_error_line_with_exit_code_2(
    pipeline_settings, new_topic, consumer_group
):
    topic = new_topic(partitions=2)
    # The group's member: a protocol librdkafka's default (range, roundrobin) has none in
    # common with, as Faust's assignor has not.
    holder = build_consumer(
        pipeline_settings.kafka,
        consumer_group,
        **{"partition.assignment.strategy": "cooperative-sticky"},
    )
    joined = threading.Event()
    stop = threading.Event()
    holder.subscribe([topic], on_assign=lambda *_: joined.set())

    def hold() -> None:
        while not stop.is_set():
            holder.poll(0.2)

    holding = threading.Thread(target=hold, daemon=True)
    holding.start()
    try:
        assert joined.wait(60), "the holder never joined its group"

        result = run_pipeline("consume", topic, "--group", consumer_group, timeout=120)
        following = run_pipeline(
            "consume", topic, "--group", consumer_group, "--follow", timeout=120
        )
    finally:
        stop.set()
        holding.join(30)
        holder.close()

    for run in (result, following):
        assert run.returncode == 2, run.stderr
        assert run.stdout == ""
        assert "Traceback" not in run.stderr
        last = said(run.stderr)[-1]
        assert last.startswith(f"error: cannot read as group {consumer_group}: "), run.stderr
        assert "another assignment protocol" in last
        assert "use another --group, or none" in last

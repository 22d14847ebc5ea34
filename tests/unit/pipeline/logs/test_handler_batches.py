"""The log handler's producer batches little: the broker refuses an oversized batch whole, so
one record too large for the logs topic lost the records batched with it (an outside review:
11 records lost for one 400 kB line on a 256 KiB topic)."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.logs import setup as logging_setup
from pipeline.settings import PipelineSettings


def test_the_handlers_batches_fit_a_topic_limit_far_below_the_brokers_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: dict[str, Any] = {}
    monkeypatch.setattr(logging_setup, "build_producer", lambda kafka, **given: made.update(given))

    logging_setup._kafka_producer_factory(PipelineSettings(), lambda error: None)

    # A batch's framing and a compression that adds bytes (lz4 on what does not compress)
    # take a tenth at most: a topic of 72 KiB takes every batch.
    assert made["batch.size"] == logging_setup.LOG_BATCH_BYTES == 65_536
    assert made["batch.size"] * 11 // 10 <= 72 * 1024
    assert made["linger.ms"] == 50

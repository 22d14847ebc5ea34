"""A processor's Faust consumer reads committed messages only (internals.read_committed)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import faust
import pytest

from pipeline.processing.faust.internals import ReadCommittedUnavailable, read_committed


def _consumer_made_by(app: faust.App) -> object:
    async def make() -> object:
        # What Faust's consumer thread does when it starts (not started here: no broker).
        return app.consumer._thread._create_worker_consumer(app.transport)

    return asyncio.run(make())


def test_fausts_own_consumer_reads_uncommitted_messages():
    # The reason read_committed exists; if Faust ever changes its default, this says so.
    app = faust.App("plain", broker="kafka://127.0.0.1:1", autodiscover=False)
    assert _consumer_made_by(app)._isolation_level == "read_uncommitted"


def test_the_consumer_a_processor_gets_reads_committed_messages_only():
    app = faust.App("processor", broker="kafka://127.0.0.1:1", autodiscover=False)
    read_committed(app.consumer)
    assert _consumer_made_by(app)._isolation_level == "read_committed"


def test_a_faust_without_the_hook_is_refused_with_a_reason():
    with pytest.raises(ReadCommittedUnavailable, match="read_committed"):
        read_committed(SimpleNamespace(_thread=SimpleNamespace()))

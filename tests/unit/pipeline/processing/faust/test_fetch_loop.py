"""Our Faust fetch loop (internals.drain_messages), run on a real Faust consumer without a broker.

The consumer is that of a Faust app that is never started; what would reach Kafka (``getmany``,
``commit``) and the conductor (the callback) is replaced on the instance, so each test sees
what the loop reads, records and hands on.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import faust
import pytest
from faust.types import TP, Message

from pipeline.processing.faust.internals import drain_messages

TOPIC = "orders.requests"
TP0 = TP(TOPIC, 0)


def message(offset: int, partition: int = 0) -> Message:
    return Message(TOPIC, partition, offset, 0.0, 0, [], b"k", b"v", None)


class FetcherStandIn:
    """Faust's fetcher as the loop sees it: only its stopped flag is read."""

    def __init__(self) -> None:
        self._stopped = asyncio.Event()


class Run:
    """One run of the loop over ``batches`` (one per ``getmany``); it ends after the last."""

    def __init__(self, batches: list[list[Message]], *, acks: bool = True) -> None:
        self.app = faust.App("fetch-loop-test", broker="kafka://127.0.0.1:1", autodiscover=False)
        self.consumer: Any = self.app.consumer
        self.fetcher = FetcherStandIn()
        self.handed: list[int] = []
        self.gaps: list[tuple[TP, int, int]] = []
        self.commits = 0
        batches_left = list(batches)

        async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Message]]:
            batch = batches_left.pop(0)
            if not batches_left:
                self.fetcher._stopped.set()
            for each in batch:
                yield each.tp, each

        async def callback(each: Message) -> None:
            self.handed.append(each.offset)

        async def add_gap(tp: TP, offset_from: int, offset_to: int) -> None:
            self.gaps.append((tp, offset_from, offset_to))

        async def commit(*_: Any, **__: Any) -> bool:
            self.commits += 1
            return True

        self.consumer.getmany = getmany
        self.consumer.callback = callback
        self.consumer._add_gap = add_gap
        self.consumer.commit = commit
        self.app.topics.acks_enabled_for = lambda topic: acks  # type: ignore[method-assign]

    async def __call__(self) -> None:
        await drain_messages(self.consumer, self.fetcher)


def run(
    batches: list[list[Message]], prepare: Callable[[Run], None] = lambda _: None, **options: Any
) -> Run:
    async def main() -> Run:
        loop_run = Run(batches, **options)
        prepare(loop_run)
        await loop_run()
        return loop_run

    return asyncio.run(main())


def test_hands_each_message_to_the_conductor_in_order_and_notes_it_read() -> None:
    done = run([[message(0), message(1)], [message(2)]])

    assert done.handed == [0, 1, 2]
    assert done.consumer._read_offset[TP0] == 2


def test_skips_messages_below_the_partitions_read_offset() -> None:
    def already_read_to_5(loop_run: Run) -> None:
        loop_run.consumer._read_offset[TP0] = 5

    done = run([[message(3), message(4), message(5), message(6)]], already_read_to_5)

    assert done.handed == [5, 6]
    assert done.consumer._read_offset[TP0] == 6


def test_records_a_gap_when_the_offsets_jump() -> None:
    done = run([[message(10), message(14), message(15)]])

    assert done.gaps == [(TP0, 11, 14)]
    assert done.handed == [10, 14, 15]


def test_records_no_gap_for_a_topic_without_acknowledgements() -> None:
    done = run([[message(10), message(14)]], acks=False)

    assert done.gaps == []
    assert done.handed == [10, 14]


def test_commits_once_commit_every_acknowledgements_were_made() -> None:
    def commit_every_2(loop_run: Run) -> None:
        loop_run.consumer._commit_every = 2
        loop_run.consumer._n_acked = 2

    done = run([[message(0), message(1)]], commit_every_2)

    assert done.commits == 1
    assert done.consumer._n_acked == 0
    assert done.handed == [0, 1]


def test_does_not_commit_before_commit_every_acknowledgements() -> None:
    def commit_every_5(loop_run: Run) -> None:
        loop_run.consumer._commit_every = 5
        loop_run.consumer._n_acked = 4

    done = run([[message(0), message(1)]], commit_every_5)

    assert done.commits == 0
    assert done.consumer._n_acked == 4


def test_drops_messages_while_the_flow_is_suspended_yet_notes_them_read() -> None:
    def suspended(loop_run: Run) -> None:
        loop_run.consumer.stop_flow()  # what Faust does on a rebalance

    done = run([[message(0), message(1)]], suspended)

    assert done.handed == []
    assert done.consumer._read_offset[TP0] == 1


def test_ignores_a_batch_fetched_while_the_consumer_stops() -> None:
    def stop_after_fetching(loop_run: Run) -> None:
        getmany = loop_run.consumer.getmany

        def stopping_getmany(timeout: float) -> AsyncIterator[tuple[TP, Message]]:
            loop_run.consumer._stopped.set()  # stopped while the batch was being fetched
            return getmany(timeout)  # type: ignore[no-any-return]

        loop_run.consumer.getmany = stopping_getmany

    done = run([[message(0)]], stop_after_fetching)

    assert done.handed == []


def test_stops_at_once_when_the_consumer_is_stopped() -> None:
    def stopped(loop_run: Run) -> None:
        loop_run.consumer._stopped.set()

    done = run([[message(0)]], stopped)

    assert done.handed == []
    assert TP0 not in done.consumer._read_offset


# --- stopping: cancellations ---------------------------------------------------------------


def blocked_forever(entered: asyncio.Event) -> Callable[..., Any]:
    """A ``getmany`` (or callback) that waits forever once entered, as on a quiet topic."""

    async def wait(*_: Any, **__: Any) -> AsyncIterator[tuple[TP, Message]]:
        entered.set()
        await asyncio.Event().wait()
        yield TP0, message(0)  # never reached

    return wait


def blocked_callback(entered: asyncio.Event) -> Callable[[Message], Awaitable[None]]:
    async def callback(each: Message) -> None:
        entered.set()
        await asyncio.Event().wait()  # the engine full, say

    return callback


async def started_fetcher(where: str) -> tuple[faust.App, Any]:
    """A real app's Faust fetcher running our loop, blocked ``where`` (getmany or callback)."""
    app = faust.App("fetch-loop-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    consumer: Any = app.consumer
    entered = asyncio.Event()
    if where == "getmany":
        consumer.getmany = blocked_forever(entered)
    else:

        async def one_message(timeout: float) -> AsyncIterator[tuple[TP, Message]]:
            yield TP0, message(0)
            await asyncio.Event().wait()

        consumer.getmany = one_message
        consumer.callback = blocked_callback(entered)
    consumer._drain_messages = types.MethodType(drain_messages, consumer)
    fetcher = app._fetcher
    await fetcher.start()
    await entered.wait()
    return app, fetcher


@pytest.mark.parametrize("where", ["getmany", "callback"])
def test_a_cancellation_while_the_app_stops_is_a_clean_stop(where: str) -> None:
    async def main() -> tuple[BaseException | None, BaseException | None]:
        app, fetcher = await started_fetcher(where)
        # Mid-rebalance, where Faust's fetcher reports a cancellation as its crash.
        app.rebalancing = True
        app._stopped.set()  # what App.stop() does first; it then stops the fetcher
        await fetcher.stop()  # cancels the loop
        return fetcher.crash_reason, app.crash_reason

    fetcher_crash, app_crash = asyncio.run(main())

    assert fetcher_crash is None
    assert app_crash is None


def test_a_cancellation_while_the_app_runs_propagates() -> None:
    async def main() -> asyncio.Task[None]:
        app = faust.App("fetch-loop-test", broker="kafka://127.0.0.1:1", autodiscover=False)
        consumer: Any = app.consumer
        entered = asyncio.Event()
        consumer.getmany = blocked_forever(entered)
        loop = asyncio.create_task(drain_messages(consumer, FetcherStandIn()))
        await entered.wait()
        loop.cancel()
        await asyncio.wait([loop])
        return loop

    assert asyncio.run(main()).cancelled()


@pytest.mark.parametrize("stopping", [True, False])
def test_the_broker_client_stopping_ends_the_loop_only_while_the_app_stops(
    stopping: bool,
) -> None:
    async def main() -> BaseException | None:
        app = faust.App("fetch-loop-test", broker="kafka://127.0.0.1:1", autodiscover=False)
        consumer: Any = app.consumer
        (stopped_error,) = consumer.consumer_stopped_errors

        async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Message]]:
            raise stopped_error()
            yield TP0, message(0)  # never reached

        consumer.getmany = getmany
        if stopping:
            app._stopped.set()
        try:
            await drain_messages(consumer, FetcherStandIn())
        except stopped_error as error:
            return error
        return None

    raised = asyncio.run(main())

    assert (raised is None) is stopping

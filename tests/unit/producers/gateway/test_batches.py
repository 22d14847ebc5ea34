"""Group commit: what queues while a batch runs goes in the next one, each item gets its own
result, a key appears once per batch, and a failed batch fails its items only."""

from __future__ import annotations

import asyncio

import pytest

from producers.gateway.batches import GroupCommit


class Recorder:
    """A ``run`` that records its batches and holds each until released."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail_on = fail_on

    async def __call__(self, batch: list[str]) -> list[str]:
        self.batches.append(batch)
        await self.release.wait()
        if self.fail_on in batch:
            raise OSError("database away")
        return [item.upper() for item in batch]


def test_a_lone_item_is_written_at_once_and_later_ones_together_in_the_next_batch():
    async def scenario() -> tuple[list[list[str]], list[str]]:
        run = Recorder()
        commit: GroupCommit[str, str] = GroupCommit(run)
        first = asyncio.create_task(commit.submit("a"))
        await asyncio.sleep(0)
        later = [asyncio.create_task(commit.submit(item)) for item in "bcd"]
        await asyncio.sleep(0)
        run.release.set()
        results = await asyncio.gather(first, *later)
        return run.batches, results

    batches, results = asyncio.run(scenario())

    assert batches == [["a"], ["b", "c", "d"]]
    assert results == ["A", "B", "C", "D"]


def test_a_batch_holds_at_most_max_size_items_and_one_item_per_unique_key():
    async def scenario() -> list[list[str]]:
        run = Recorder()
        run.release.set()
        commit: GroupCommit[str, str] = GroupCommit(run, max_size=3, unique=lambda item: item[0])
        await asyncio.gather(*(commit.submit(item) for item in ["x1", "y1", "x2", "z1", "w1"]))
        return run.batches

    assert asyncio.run(scenario()) == [["x1", "y1", "z1"], ["x2", "w1"]]


def test_a_failed_batch_fails_each_of_its_items_and_the_next_batch_still_runs():
    async def scenario() -> tuple[list[object], list[list[str]]]:
        run = Recorder(fail_on="bad")
        commit: GroupCommit[str, str] = GroupCommit(run, max_size=2)
        tasks = [asyncio.create_task(commit.submit(item)) for item in ["ok", "bad", "fine"]]
        await asyncio.sleep(0)
        run.release.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        await commit.wait_idle()
        return outcomes, run.batches

    outcomes, batches = asyncio.run(scenario())

    assert batches == [["ok", "bad"], ["fine"]]
    assert [type(outcome) for outcome in outcomes[:2]] == [OSError, OSError]
    assert outcomes[2] == "FINE"


def test_wait_idle_returns_once_every_queued_item_is_written():
    async def scenario() -> list[list[str]]:
        run = Recorder()
        commit: GroupCommit[str, str] = GroupCommit(run)
        tasks = [asyncio.create_task(commit.submit(item)) for item in "ab"]
        await asyncio.sleep(0)
        asyncio.get_running_loop().call_later(0.01, run.release.set)
        await commit.wait_idle()
        assert all(task.done() for task in tasks)
        return run.batches

    assert asyncio.run(scenario()) == [["a", "b"]]


def test_max_size_must_be_positive():
    with pytest.raises(ValueError, match="max_size must be >= 1"):
        GroupCommit(Recorder(), max_size=0)

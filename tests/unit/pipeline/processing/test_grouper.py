"""Group commit's Grouper: items submitted while a group runs form the next group."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pipeline.processing.group_commit import Grouper


class HeldRunner:
    """A runner that holds each group until :attr:`release` is set, noting which it ran."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.calls = 0

    async def __call__(self, work: Callable[[], list[str]]) -> list[str]:
        self.calls += 1
        self.entered.set()
        await self.release.wait()
        return work()


class Work:
    """``work(items)``: notes each group; a group holding ``"bad"`` raises."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []

    def __call__(self, items: list[str]) -> list[str]:
        self.groups.append(list(items))
        if "bad" in items:
            raise ValueError("the group's transaction failed")
        return [f"done:{item}" for item in items]


def test_items_submitted_while_a_group_runs_form_the_next_group() -> None:
    work = Work()

    async def scenario() -> list[str]:
        runner = HeldRunner()
        grouper: Grouper[str, str] = Grouper(work, runner)
        first = [asyncio.ensure_future(grouper.submit(item)) for item in ("a", "b", "c")]
        await runner.entered.wait()  # the first group is in the runner, held
        later = [asyncio.ensure_future(grouper.submit(item)) for item in ("d", "e")]
        await asyncio.sleep(0)  # the later submitters are waiting
        runner.release.set()
        return list(await asyncio.gather(*first, *later))

    results = asyncio.run(scenario())

    assert work.groups == [["a", "b", "c"], ["d", "e"]]
    assert results == ["done:a", "done:b", "done:c", "done:d", "done:e"]


def test_each_submitter_gets_its_own_items_result() -> None:
    def work(items: list[int]) -> list[int]:
        return [item * 10 for item in items]

    async def run(function: Callable[[], list[int]]) -> list[int]:
        return function()

    async def scenario() -> list[int]:
        grouper: Grouper[int, int] = Grouper(work, run)
        return list(await asyncio.gather(*(grouper.submit(item) for item in (3, 1, 2))))

    assert asyncio.run(scenario()) == [30, 10, 20]


def test_a_failing_group_gives_each_submitter_the_error_and_the_next_group_still_runs() -> None:
    work = Work()

    async def scenario() -> tuple[list[BaseException | str], str]:
        runner = HeldRunner()
        grouper: Grouper[str, str] = Grouper(work, runner)
        failing = [asyncio.ensure_future(grouper.submit(item)) for item in ("bad", "x")]
        await runner.entered.wait()
        later = asyncio.ensure_future(grouper.submit("y"))
        await asyncio.sleep(0)
        runner.release.set()
        failed = await asyncio.gather(*failing, return_exceptions=True)
        return list(failed), await later

    failed, later = asyncio.run(scenario())

    assert work.groups == [["bad", "x"], ["y"]]
    assert [type(error) for error in failed] == [ValueError, ValueError]
    assert all(str(error) == "the group's transaction failed" for error in failed)
    assert later == "done:y"


def test_a_grouper_that_went_idle_starts_a_new_group_for_the_next_item() -> None:
    work = Work()

    async def run(function: Callable[[], list[str]]) -> list[str]:
        return function()

    async def scenario() -> list[str]:
        grouper: Grouper[str, str] = Grouper(work, run)
        first = await grouper.submit("a")
        second = await grouper.submit("b")
        return [first, second]

    assert asyncio.run(scenario()) == ["done:a", "done:b"]
    assert work.groups == [["a"], ["b"]]


def test_with_a_concurrency_of_two_two_groups_run_at_once_and_the_rest_wait() -> None:
    work = Work()

    async def scenario() -> tuple[int, list[str]]:
        runner = HeldRunner()
        grouper: Grouper[str, str] = Grouper(work, runner, concurrency=2, max_size=2)
        first = [asyncio.ensure_future(grouper.submit(item)) for item in "abcde"]
        while runner.calls < 2:
            await asyncio.sleep(0)
        for _ in range(5):
            await asyncio.sleep(0)
        running = runner.calls  # two groups entered, the third waits for a slot
        runner.release.set()
        return running, list(await asyncio.gather(*first))

    running, results = asyncio.run(scenario())

    assert running == 2
    assert work.groups == [["a", "b"], ["c", "d"], ["e"]]
    assert results == [f"done:{item}" for item in "abcde"]


def test_max_size_and_concurrency_may_be_functions_asked_for_each_group() -> None:
    work = Work()
    sizes = iter([1, 3, 3])

    async def run(function: Callable[[], list[str]]) -> list[str]:
        return function()

    async def scenario() -> list[str]:
        grouper: Grouper[str, str] = Grouper(
            work, run, concurrency=lambda: 1, max_size=lambda: next(sizes)
        )
        return list(await asyncio.gather(*(grouper.submit(item) for item in "abcd")))

    assert asyncio.run(scenario()) == [f"done:{item}" for item in "abcd"]
    assert work.groups == [["a"], ["b", "c", "d"]]


def test_an_awaiting_grouper_awaits_its_work_on_the_loop_in_groups() -> None:
    groups: list[list[int]] = []

    async def work(items: list[int]) -> list[int]:
        groups.append(list(items))
        await asyncio.sleep(0.01)  # the next items arrive meanwhile
        if 99 in items:
            raise ValueError("the group's statement failed")
        return [item * 10 for item in items]

    async def scenario() -> tuple[list[int], list[int], BaseException | None]:
        grouper = Grouper.awaiting(work)
        first = [asyncio.ensure_future(grouper.submit(item)) for item in (1, 2, 3)]
        await asyncio.sleep(0.001)  # the first group is running
        later = [asyncio.ensure_future(grouper.submit(item)) for item in (4, 5)]
        results = list(await asyncio.gather(*first, *later))
        failed = await asyncio.gather(grouper.submit(99), grouper.submit(6), return_exceptions=True)
        error = failed[0] if isinstance(failed[0], BaseException) else None
        return results, [r for r in failed if isinstance(r, int)], error

    results, after_failure, error = asyncio.run(scenario())

    assert groups == [[1, 2, 3], [4, 5], [99, 6]]
    assert results == [10, 20, 30, 40, 50]
    assert after_failure == [] and isinstance(error, ValueError)

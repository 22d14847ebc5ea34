"""Group commit's Grouper: items submitted while a group runs form the next group; a
lingering group waits a few turns for the items on their way."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

import pytest

from pipeline.processing.grouper import Grouper, Linger


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


def test_a_failed_groups_future_nobody_awaits_reports_nothing_and_one_awaited_raises() -> None:
    async def look_up(items: list[str]) -> list[str]:
        raise ConnectionError("database away")

    errors: list[dict[str, object]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        grouper: Grouper[str, str] = Grouper.awaiting(look_up)
        grouper.submit_nowait("dropped")  # its caller went away (a revoked partition)
        awaited = grouper.submit_nowait("awaited")
        await asyncio.sleep(0.01)
        with pytest.raises(ConnectionError, match="database away"):
            await awaited

    asyncio.run(scenario())
    gc.collect()  # the dropped future is collected: an exception never retrieved is said there

    assert errors == []


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


# --- linger: a group on the loop waits a few turns for the items on their way ------------------


def lingering_groups(
    linger: Linger | None, arrivals: list[list[str]]
) -> tuple[list[list[str]], list[str]]:
    """Submit each list of ``arrivals`` in a turn of its own to a grouper whose work runs at
    once on the loop (as SQLite's claims); the groups it formed, and every item's result."""
    groups: list[list[str]] = []

    async def work(items: list[str]) -> list[str]:
        groups.append(list(items))
        return [f"done:{item}" for item in items]

    async def scenario() -> list[str]:
        grouper = Grouper.awaiting(work, linger=linger)
        futures = []
        for turn in arrivals:
            futures += [grouper.submit_nowait(item) for item in turn]
            await asyncio.sleep(0)  # the next turn of the loop
        return list(await asyncio.wait_for(asyncio.gather(*futures), timeout=30))

    results = asyncio.run(scenario())
    return groups, results


def test_without_a_linger_each_turns_items_are_a_group() -> None:
    groups, _ = lingering_groups(None, [["a", "b"], ["c"], ["d"]])

    assert groups == [["a", "b"], ["c"], ["d"]]


def test_a_linger_keeps_a_group_open_while_more_items_are_on_their_way() -> None:
    arrivals = [["a", "b"], ["c"], ["d"]]
    on_their_way = iter([True, True, False])  # asked once a turn

    groups, results = lingering_groups(
        Linger(lambda: next(on_their_way, False), size=10, most_s=3600), arrivals
    )

    assert groups == [["a", "b", "c", "d"]]
    assert results == ["done:a", "done:b", "done:c", "done:d"]


def test_a_lingering_group_starts_once_it_has_size_items() -> None:
    on_their_way = iter([True, True, True])

    groups, _ = lingering_groups(
        Linger(lambda: next(on_their_way, False), size=3, most_s=3600),
        [["a", "b"], ["c"], ["d"], ["e"]],
    )

    assert groups == [["a", "b", "c"], ["d", "e"]]


def test_a_group_lingers_no_longer_than_most_s_even_if_more_keep_coming() -> None:
    # Items are always "on their way" and the group never fills: most_s ends the wait.
    groups, results = lingering_groups(Linger(lambda: True, size=1000, most_s=0.001), [["a"]])

    assert groups == [["a"]]
    assert results == ["done:a"]


def test_while_counting_says_more_are_coming_only_when_the_count_moved() -> None:
    count = [0]
    linger = Linger.while_counting(lambda: count[0], size=64, most_s=0.004)

    answers = [linger.more_coming()]
    count[0] = 3
    answers += [linger.more_coming(), linger.more_coming()]
    count[0] = 4
    answers.append(linger.more_coming())

    assert answers == [False, True, False, True]

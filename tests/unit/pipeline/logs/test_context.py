"""log_context nests, and is private to each thread and each asyncio task."""

import asyncio
import threading

import pytest

from pipeline.logs.context import current_context, log_context


def test_nested_blocks_add_and_override_then_restore():
    with log_context(correlation_id="c-1", event_id="e-1"):
        with log_context(event_id="e-2", partition=3):
            assert dict(current_context()) == {
                "correlation_id": "c-1",
                "event_id": "e-2",
                "partition": 3,
            }
        assert dict(current_context()) == {"correlation_id": "c-1", "event_id": "e-1"}
    assert dict(current_context()) == {}


def test_the_context_is_restored_when_the_block_raises():
    with pytest.raises(RuntimeError), log_context(saga_id="s-1"):
        raise RuntimeError
    assert dict(current_context()) == {}


def test_wrong_types_are_refused_clearly():
    with pytest.raises(TypeError, match="offset"), log_context(offset="7"):  # type: ignore[arg-type]
        pass
    with pytest.raises(TypeError, match="event_id"), log_context(event_id=7):  # type: ignore[arg-type]
        pass


def test_threads_do_not_see_each_others_context():
    seen = {}
    barrier = threading.Barrier(2)

    def work(name):
        with log_context(correlation_id=name):
            barrier.wait()  # both inside their blocks at once
            seen[name] = current_context()["correlation_id"]

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    with log_context(correlation_id="main"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert current_context()["correlation_id"] == "main"
    assert seen == {"a": "a", "b": "b"}


def test_asyncio_tasks_do_not_see_each_others_context():
    async def handle(name, gate):
        with log_context(event_id=name):
            await gate.wait()  # the other task runs its block meanwhile
            return current_context()["event_id"]

    async def main():
        gate = asyncio.Event()
        tasks = [asyncio.create_task(handle(n, gate)) for n in ("x", "y", "z")]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == ["x", "y", "z"]

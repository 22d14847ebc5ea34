"""Fewer runs of Python's cyclic garbage collector while a hot loop runs.

A loop that sends many messages (``pipeline produce``, the outbox relay) makes a few
containers per message and keeps those in flight alive until their delivery reports, so the
default threshold (700 allocations) runs the collector over a growing heap many times a
second, for nothing: the loop creates no reference cycles, and reference counting frees it
all. Measured: 10-20% of ``pipeline produce``'s CPU time per line, about a quarter of the
relay's per row. A processor (``pipeline process``) allocates its futures, tasks and records
at the same pace, over a heap that holds the whole Faust app: run with the default, the
collector's scans landed in whatever code allocated next and cost a no-op handler's runtime
about a fifth of its events (bench/processing.py B: 9,804 -> 12,155 events/s with ordering and
inbox, 14,298 -> 15,981 without). Asyncio's futures and tasks do make cycles, and the
collector still runs, only less often.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_paused", "few_collections"]

#: Allocations between two runs of the youngest generation while the block runs.
THRESHOLD_WHILE_SENDING = 50_000


@contextmanager
def few_collections(threshold: int = THRESHOLD_WHILE_SENDING) -> Iterator[None]:
    """Run the collector far less often while the block runs: objects made before (imports,
    settings, clients) are frozen out of its scans, and its first threshold is ``threshold``;
    both are restored after."""
    saved = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(threshold, *saved[1:])
    try:
        yield
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()


@contextmanager
def collector_paused() -> Iterator[None]:
    """No run of the collector while the block runs, for a block that keeps many new objects
    and makes no cycles (a list of them growing: each run would scan it all again); after, the
    collector is as it was (enabled only if it was). Unlike :func:`few_collections` it freezes
    nothing, so a library function may use it in a program that froze objects of its own."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()

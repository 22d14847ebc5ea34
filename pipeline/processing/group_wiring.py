"""The groups of an engine: which :class:`~pipeline.processing.grouper.Grouper` does each
step of the group path, on which connection, how many at once (:func:`build_groups`).

- ``commits``: the groups whose handlers wrote (their effects, outbox rows and inbox rows in one
  transaction), in a worker thread, one group at a time;
- ``look_ups`` and ``claims``: the inbox and park look-ups before the handlers, and the inbox
  rows of groups that wrote nothing else; on SQLite on the event loop's own connection
  (:mod:`~pipeline.processing.sqlite_loop_inbox`; a claim there lingers while handlers start,
  see below), on PostgreSQL on its own asyncio connections (:mod:`~pipeline.processing.loop_inbox`),
  two groups at once; else in worker threads;
- ``calls``: synchronous handlers, each group's handlers one after another in one transaction in
  a worker thread, as many events as ``sync_group_wait_ms`` allows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, NamedTuple

from sqlalchemy.engine import Engine

from pipeline.database import is_postgres
from pipeline.outbox.table import Outbox
from pipeline.processing import group_commit
from pipeline.processing.attempt import AttemptResult
from pipeline.processing.grouper import Grouper, Linger
from pipeline.processing.loop_inbox import LoopInbox
from pipeline.processing.processor import UnitOfWork
from pipeline.processing.sqlite_loop_inbox import SqliteLoopInbox, sqlite_file_of
from pipeline.settings import ProcessingSettings

__all__ = ["Groups", "build_groups"]

InThread = Callable[[Callable[[], Any]], Awaitable[Any]]

# SQLite's claims on the loop: a group waits while handlers were started since the last turn
# (their events come next, unless they wrote), up to this many events or this long for its
# first. A claim there runs within one turn, so without it a group held only the events of one
# turn (max_in_flight at most), and paid a commit and a turn of the grouper for every few.
# bench/processing.py B (default max_in_flight 16, 6 interleaved A/B rounds, 2026-12-07):
# ordering per key + inbox with a no-op handler 11,850 -> 13,250 events/s (medians), 0.66x ->
# 0.75x of the bare runtime in the same rounds; A (a 2 ms handler) on SQLite unchanged.
_CLAIM_LINGER_SIZE = 64
_CLAIM_LINGER_MOST_S = 0.004


class Groups(NamedTuple):
    commits: Grouper[UnitOfWork, AttemptResult]
    look_ups: Grouper[tuple[str, str, bytes | None], group_commit.Seen]
    claims: Grouper[UnitOfWork, AttemptResult]
    calls: Grouper[group_commit.Call, AttemptResult | None]
    #: The connection the look-ups and claims use on the event loop, if any (closed at the end).
    loop_inbox: LoopInbox | SqliteLoopInbox | None


def build_groups(
    database: Engine,
    settings: ProcessingSettings,
    *,
    consumer_group: str,
    grouped: bool,
    park_keys: bool,
    outbox: Outbox,
    in_thread: InThread,
    handlers_placed: Callable[[], int],
) -> Groups:
    """The groupers of an engine reading for ``consumer_group`` (``in_thread`` runs a function
    in one of its worker threads; ``handlers_placed()`` counts the handlers started so far)."""
    # PostgreSQL looks up, and records events that wrote nothing else, two groups at once
    # (the next group's round trip overlaps this one's); groups with the handlers' writes
    # commit one at a time, so two groups of one instance never wait on each other's locks
    # of the service's rows. SQLite has one writer: one group at a time.
    at_once = 2 if database.dialect.name == "postgresql" else 1
    commit = partial(
        group_commit.commit,
        database,
        consumer_group=consumer_group,
        use_inbox=settings.inbox,
    )
    commits: Grouper[UnitOfWork, AttemptResult] = Grouper(commit, in_thread)
    look_ups: Grouper[tuple[str, str, bytes | None], group_commit.Seen]
    claims: Grouper[UnitOfWork, AttemptResult]
    loop_inbox: LoopInbox | SqliteLoopInbox | None = None
    sqlite_file = sqlite_file_of(database)
    if grouped and settings.inbox and sqlite_file is not None:
        # SQLite: the same on the loop's own connection, which never waits for a lock
        # (a claim that would wait is committed from a thread): sqlite_loop_inbox.
        loop_inbox = SqliteLoopInbox(
            sqlite_file,
            consumer_group=consumer_group,
            park_keys=park_keys,
            commit_in_thread=lambda units: in_thread(partial(commit, units)),
        )
        look_ups = Grouper.awaiting(loop_inbox.look_up)
        linger = Linger.while_counting(
            handlers_placed, size=_CLAIM_LINGER_SIZE, most_s=_CLAIM_LINGER_MOST_S
        )
        claims = Grouper.awaiting(loop_inbox.claim, linger=linger)
    elif grouped and settings.inbox and is_postgres(database):
        # The look-ups and the claims of groups that wrote nothing else on the loop's own
        # connections: no worker thread waiting for the interpreter (loop_inbox).
        loop_inbox = LoopInbox(
            database,
            consumer_group=consumer_group,
            park_keys=park_keys,
            commit_in_thread=lambda units: in_thread(partial(commit, units)),
            concurrency=at_once,
        )
        look_ups = Grouper.awaiting(loop_inbox.look_up, concurrency=at_once)
        claims = Grouper.awaiting(loop_inbox.claim, concurrency=at_once)
    else:
        look_ups = Grouper(
            partial(
                group_commit.look_up,
                database,
                consumer_group=consumer_group,
                park_keys=park_keys,
            ),
            in_thread,
            concurrency=at_once,
        )
        claims_of = partial(group_commit.commit_claims, database, consumer_group=consumer_group)
        claims = Grouper(claims_of, in_thread, concurrency=at_once)

    # Synchronous handlers: groups of the events submitted together, each group's handlers
    # in one transaction in a worker thread, as large as sync_group_wait_ms allows.
    pace = group_commit.HandlerPace(settings.sync_group_wait_ms / 1000, most=settings.max_in_flight)
    calls: Grouper[group_commit.Call, AttemptResult | None] = Grouper(
        partial(
            group_commit.run_calls,
            database,
            consumer_group=consumer_group,
            use_inbox=settings.inbox,
            park_keys=park_keys,
            pace=pace,
            outbox=outbox,
        ),
        in_thread,
        concurrency=pace.groups,
        max_size=pace.group_size,
    )
    return Groups(commits, look_ups, claims, calls, loop_inbox)

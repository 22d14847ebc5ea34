"""An Idempotency-Key store in PostgreSQL, shared by every gateway process.

The same states as :class:`~producers.gateway.idempotency.IdempotencyStore`, in one table
(``pipeline_gateway_idempotency``, migration 0004) with a row per (client, key):

1. *claim*: ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expires_at <= now()``: the row is
   ours when it did not exist or had expired. PostgreSQL serialises the two inserts of one key,
   so of two gateways that receive it at once exactly one claims it, with a token of its own,
   the body's fingerprint and a lease (``claim_lease_s``: a gateway that dies holding a claim
   frees it then);
2. the others read the row: another fingerprint is
   :class:`~producers.gateway.idempotency.IdempotencyKeyReused`; an answer is a replay; no
   answer yet is *in flight*: they poll the row every ``poll_s`` for at most ``wait_s``, and
   replay the answer once the claimant stored it (the gateway answers 409 past ``wait_s``);
   a row gone means the claim was released: they claim anew;
3. the claimant settles its claim (only while the row still carries its token): a 2xx/4xx
   answer is stored and kept ``ttl_s``; a 5xx answer, or nothing done, deletes the row, so a
   retry produces anew;
4. expired rows are deleted every ``purge_interval_s`` by each gateway (any may do it).

Expiry uses the database's clock (``now()``), one clock for every replica. The claims of the
requests that arrive together go in one statement, and so do their answers (group commit, see
:mod:`producers.gateway.batches`): a quiet gateway writes each at once, a busy one writes
many per round trip. Each statement runs alone in autocommit mode (a statement is its own
transaction in PostgreSQL: no ``BEGIN``/``COMMIT`` round trips), on psycopg's asyncio
connections: three per gateway process (claims, answers, and the waiters' reads with the
purge), opened on first use and again after a failure, from the engine's URL; a statement
whose connection was lost runs once more on a new one (each is idempotent: a claim whose first
run committed is recognised by its token). An answer the database does not take is tried again
until it is, and replayed meanwhile from this process's memory (to its waiters too): its claim
keeps the key, so a retry elsewhere gets 503 while the database is away and 409 after, never a
second event, unless the database stayed away past the claim's lease (logged at ERROR). On the
event
loop itself, not in threads: a thread hop each way cost more than the statement, in CPU and,
on a busy machine, in waiting to be scheduled. Unlike the in-process store there is no
``max_keys``: rows live ``ttl_s``. PostgreSQL only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from base64 import b64encode
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

import psycopg
from sqlalchemy import Column, DateTime, Integer, LargeBinary, String, Table
from sqlalchemy.engine import Engine

from pipeline.async_postgres import LoopConnection, libpq_conninfo, without_password
from pipeline.database import metadata
from producers.gateway.batches import GroupCommit
from producers.gateway.idempotency import (
    IdempotencyKeyReused,
    IdempotencyUnavailable,
    InFlight,
    Replay,
    Settle,
    StoredAnswer,
)

__all__ = ["PostgresIdempotency", "Row", "decide", "idempotency_table"]

log = logging.getLogger("producers.gateway")

T = TypeVar("T")

idempotency_table = Table(
    "pipeline_gateway_idempotency",
    metadata,
    Column("client", String(255), primary_key=True),
    Column("idempotency_key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("claim_token", String(32), nullable=False),
    Column("status", Integer, nullable=True),
    Column("body", LargeBinary, nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)


@dataclass(frozen=True)
class Row:
    """A live (unexpired) row of the table, as step 2 reads it."""

    fingerprint: str
    claim_token: str
    status: int | None
    body: bytes | None
    #: Seconds until the row expires (a claim's lease, or an answer's TTL), by the database.
    expires_in_s: float = 0.0


def decide(row: Row | None, key: str, fingerprint: str) -> Replay | Literal["pending", "gone"]:
    """Step 2 for a key someone else claimed: a replay, still ``pending``, or ``gone``
    (released or expired: claim again); raises :class:`IdempotencyKeyReused`."""
    if row is None:
        return "gone"
    if row.fingerprint != fingerprint:
        raise IdempotencyKeyReused(key)
    if row.status is None:
        return "pending"
    return Replay(StoredAnswer(row.status, row.body or b""))


# Each statement takes a whole batch, so a batch of claims or answers is one statement and one
# round trip (see producers.gateway.batches). A batch travels as one JSON text of rows (arrays
# of values) that PostgreSQL unpacks (json_array_elements): psycopg writes a Python list as an
# SQL array element by element in Python, which cost the gateway about a twentieth of its CPU
# per request, where json.dumps of the rows is C. Rows are locked in (client, key) order by
# every statement, so two gateways' statements never wait for each other in a cycle; a
# deadlock all the same is retried (_DEADLOCK_RETRIES). psycopg's parameter style; psycopg
# prepares a statement on the server once it has run a few times.
_T = idempotency_table.name
_CLAIM = f"""
    INSERT INTO {_T} AS t (client, idempotency_key, fingerprint, claim_token, status, body,
                           expires_at)
    SELECT u.client, u.idempotency_key, u.fingerprint, u.claim_token, NULL, NULL,
           now() + make_interval(secs => %(lease_s)s::float8)
    FROM (
        SELECT r->>0 AS client, r->>1 AS idempotency_key, r->>2 AS fingerprint,
               r->>3 AS claim_token
        FROM json_array_elements(%(rows)s::json) AS r
    ) AS u
    ORDER BY u.client, u.idempotency_key
    ON CONFLICT (client, idempotency_key) DO UPDATE
    SET fingerprint = excluded.fingerprint, claim_token = excluded.claim_token, status = NULL,
        body = NULL, expires_at = excluded.expires_at
    WHERE t.expires_at <= now()
    RETURNING t.client, t.idempotency_key, t.claim_token
"""
_READ = f"""
    SELECT t.client, t.idempotency_key, t.fingerprint, t.claim_token, t.status, t.body,
           extract(epoch FROM t.expires_at - now())::float8 AS expires_in_s
    FROM {_T} AS t
    JOIN (
        SELECT r->>0 AS client, r->>1 AS idempotency_key
        FROM json_array_elements(%(rows)s::json) AS r
    ) AS u
      ON t.client = u.client AND t.idempotency_key = u.idempotency_key
    WHERE t.expires_at > now()
"""
# The answers' bodies travel in base64 (JSON has no bytes).
_MINE = f"""
    WITH u AS MATERIALIZED (
        SELECT r->>0 AS client, r->>1 AS idempotency_key, r->>2 AS claim_token,
               (r->>3)::integer AS status, decode(r->>4, 'base64') AS body
        FROM json_array_elements(%(rows)s::json) AS r
    ), mine AS MATERIALIZED (
        SELECT t.client, t.idempotency_key, u.status, u.body
        FROM {_T} AS t
        JOIN u ON t.client = u.client AND t.idempotency_key = u.idempotency_key
              AND t.claim_token = u.claim_token
        ORDER BY t.client, t.idempotency_key
        FOR UPDATE OF t
    )
"""
_ANSWER = f"""{_MINE}
    UPDATE {_T} AS t
    SET status = mine.status, body = mine.body,
        expires_at = now() + make_interval(secs => %(ttl_s)s::float8)
    FROM mine
    WHERE t.client = mine.client AND t.idempotency_key = mine.idempotency_key
    RETURNING t.client, t.idempotency_key
"""
_RELEASE = f"""{_MINE}
    DELETE FROM {_T} AS t USING mine
    WHERE t.client = mine.client AND t.idempotency_key = mine.idempotency_key
"""
_PURGE = f"DELETE FROM {_T} WHERE expires_at <= now()"
#: Attempts of a statement that PostgreSQL ended to break a deadlock.
_DEADLOCK_RETRIES = 3
#: The longest pause between two attempts to store an answer while the database is away.
_SETTLE_RETRY_MAX_S = 5.0
#: The least time between two warnings that answers could not be stored.
_WARNING_INTERVAL_S = 60.0


@dataclass(frozen=True)
class _Claim:
    client: str
    key: str
    fingerprint: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class _Unstored:
    """An answer of this process's claim not stored yet, replayed from memory meanwhile."""

    fingerprint: str
    token: str = field(repr=False)
    answer: StoredAnswer


@dataclass(frozen=True)
class _Settle:
    client: str
    key: str
    token: str = field(repr=False)
    answer: StoredAnswer | None


class PostgresIdempotency:
    """The shared store: :class:`~producers.gateway.idempotency.IdempotencyKeys` over a table."""

    def __init__(
        self,
        engine: Engine,
        *,
        ttl_s: float,
        claim_lease_s: float,
        wait_s: float,
        poll_s: float = 0.02,
        purge_interval_s: float = 60.0,
        settle_retry_s: float = 0.5,
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(f"a PostgreSQL engine is needed, got {engine.dialect.name}")
        self._engine = engine
        conninfo = libpq_conninfo(engine)
        self._claims_db = LoopConnection(conninfo)
        self._answers_db = LoopConnection(conninfo)
        self._reads_db = LoopConnection(conninfo)
        self._ttl_s = ttl_s
        self._lease_s = claim_lease_s
        self._wait_s = wait_s
        self._poll_s = poll_s
        self._purge_interval_s = purge_interval_s
        self._settling: set[asyncio.Task[Any]] = set()
        self._settle_retry_s = settle_retry_s
        self._closing = asyncio.Event()
        # Answers of this process's claims not stored yet (the database away), replayed from
        # here meanwhile, to new requests and to the waiters.
        self._unstored: dict[tuple[str, str], _Unstored] = {}
        # Answers that could not be stored at first and are not settled yet; of those, stored
        # since; and when the next warning may come (None: none given in this outage yet).
        self._failing = 0
        self._stored_late = 0
        self._next_warning_at: float | None = None
        self._watchers: set[asyncio.Task[Any]] = set()
        self._claims = GroupCommit(
            partial(self._run, self._claim_batch), unique=lambda c: (c.client, c.key)
        )
        self._answers = GroupCommit(partial(self._run, self._settle_batch))

    def __repr__(self) -> str:
        return f"PostgresIdempotency(ttl_s={self._ttl_s:g})"

    # ---- step 1 and 2 -----------------------------------------------------------------------

    async def begin(self, client: str, key: str, fingerprint: str) -> Replay | InFlight | Settle:
        while True:
            unstored = self._unstored.get((client, key))
            if unstored is not None:  # this process's answer, not stored yet: replayed from here
                if unstored.fingerprint != fingerprint:
                    raise IdempotencyKeyReused(key)
                return Replay(unstored.answer)
            token = secrets.token_hex(16)
            claimed, row = await self._claims.submit(_Claim(client, key, fingerprint, token))
            if claimed:
                return _SharedClaim(self, client, key, fingerprint, token)
            decision = decide(row, key, fingerprint)
            if decision == "gone":
                continue
            if isinstance(decision, Replay):
                return decision
            future: Future[StoredAnswer | None] = Future()
            assert row is not None
            self._background(self._watch(client, key, row.claim_token, future), self._watchers)
            # When it was claimed is not known: the row keeps only when the claim expires, and
            # the lease it got is the claiming gateway's (its settings may differ from ours).
            return InFlight(future, expires_in_s=max(0.0, row.expires_in_s))

    async def _claim_batch(self, claims: list[_Claim]) -> list[tuple[bool, Row | None]]:
        """Claim each key; for those claimed by someone else, their row (step 1 and 2)."""
        batch = [(claim.client, claim.key, claim.fingerprint, claim.token) for claim in claims]
        values = {"rows": json.dumps(batch), "lease_s": self._lease_s}
        # Run again on a fresh connection if its connection was lost, though the first run may
        # have committed: a claim of ours is then recognised by its token when its row is read.
        claimed = await self._claims_db.execute(_CLAIM, values, idempotent=True)
        won = {(row.client, row.idempotency_key, row.claim_token) for row in claimed}
        lost = [(c.client, c.key) for c in claims if (c.client, c.key, c.token) not in won]
        rows = await self._read_rows(self._claims_db, lost)
        for (client, key), row in rows.items():
            won.add((client, key, row.claim_token))
        return [
            (True, None)
            if (claim.client, claim.key, claim.token) in won
            else (False, rows.get((claim.client, claim.key)))
            for claim in claims
        ]

    async def _read(self, client: str, key: str) -> Row | None:
        return (await self._read_rows(self._reads_db, [(client, key)])).get((client, key))

    @staticmethod
    async def _read_rows(
        connection: LoopConnection, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], Row]:
        if not keys:
            return {}
        values = {"rows": json.dumps(keys)}
        return {
            (found.client, found.idempotency_key): Row(
                found.fingerprint, found.claim_token, found.status, found.body, found.expires_in_s
            )
            for found in await connection.execute(_READ, values, idempotent=True)
        }

    async def _watch(
        self, client: str, key: str, token: str, future: Future[StoredAnswer | None]
    ) -> None:
        """Settle ``future`` with the claimant's answer (from this process's memory if the
        claim is this process's and its answer not stored yet), or ``None`` once its claim is
        gone; left pending (the gateway answers 409) when nothing changed within ``wait_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        while loop.time() < deadline and not future.done():
            await asyncio.sleep(self._poll_s)
            unstored = self._unstored.get((client, key))
            if unstored is not None and unstored.token == token:
                answer = unstored.answer
                row: Row | None = Row(unstored.fingerprint, token, answer.status, answer.body)
            else:
                try:
                    row = await self._run(self._read, client, key)
                except IdempotencyUnavailable:
                    continue
            if row is None or row.claim_token != token:
                result: StoredAnswer | None = None
            elif row.status is None:
                continue
            else:
                result = StoredAnswer(row.status, row.body or b"")
            if future.set_running_or_notify_cancel():
                future.set_result(result)
            return

    # ---- step 3 -----------------------------------------------------------------------------

    async def _settle_batch(self, settles: list[_Settle]) -> list[bool]:
        """Store the answers (2xx/4xx) and release the other claims (step 3); for each,
        whether it was stored (``False``: its row no longer carried its claim's token: the
        claim expired and the key was claimed anew), a release always ``True``."""
        answers = [item for item in settles if _kept(item)]
        releases = [item for item in settles if not _kept(item)]
        stored: set[tuple[str, str]] = set()
        for statement, items in ((_ANSWER, answers), (_RELEASE, releases)):
            if items:
                values = {**_settle_values(items), "ttl_s": self._ttl_s}
                # Idempotent: each row is written only while it carries the claim's token.
                rows = await self._answers_db.execute(statement, values, idempotent=True)
                stored.update((row.client, row.idempotency_key) for row in rows)
        return [(item.client, item.key) in stored or not _kept(item) for item in settles]

    def settle(
        self, client: str, key: str, token: str, answer: StoredAnswer | None, fingerprint: str = ""
    ) -> None:
        """Store (or release) a claim in the background; at once when no loop runs."""
        item = _Settle(client, key, token, answer)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            with self._engine.connect() as connection:  # SQLAlchemy passes psycopg's style on
                statement = _ANSWER if _kept(item) else _RELEASE
                values = {**_settle_values([item]), "ttl_s": self._ttl_s}
                connection.exec_driver_sql(statement, values)
                connection.commit()
            return
        if _kept(item) and answer is not None:
            self._unstored[(client, key)] = _Unstored(fingerprint, token, answer)
        self._background(self._settle_until_stored(item), self._settling)

    async def _settle_until_stored(self, item: _Settle) -> None:
        """Store ``item``, again and again while the database is away (its claim keeps the
        key meanwhile: never a second event), until it is stored or the store closes; a
        retry with the key that reaches this process meanwhile gets the answer from memory."""
        delay_s = self._settle_retry_s
        failed = False
        stored = False
        try:
            while True:
                try:
                    stored = await self._answers.submit(item)
                except IdempotencyUnavailable as error:
                    if self._closing.is_set():
                        log.error(
                            "the answer to Idempotency-Key %r of client %r could not be stored "
                            "before the gateway stopped (%s): a retry with it gets 409 until "
                            "its claim expires, then is handled anew (a second event if the "
                            "first was produced)",
                            item.key,
                            item.client,
                            error,
                        )
                        return
                    if not failed:
                        failed = True
                        self._failing += 1
                        self._warn_unstored(error)
                    with suppress(TimeoutError):  # woken at once by close(): one last try
                        await asyncio.wait_for(self._closing.wait(), delay_s)
                    delay_s = min(delay_s * 2, _SETTLE_RETRY_MAX_S)
                    continue
                if not stored:
                    log.error(
                        "the answer to Idempotency-Key %r of client %r could not be stored: "
                        "its claim had expired (the database away past the claim's lease) and "
                        "the key was claimed anew, so a retry with it was handled anew, "
                        "possibly producing a second event",
                        item.key,
                        item.client,
                    )
                return
        finally:
            unstored = self._unstored.get((item.client, item.key))
            if unstored is not None and unstored.token == item.token:
                del self._unstored[(item.client, item.key)]
            if failed:
                self._settled_late(stored=stored)

    def _warn_unstored(self, error: IdempotencyUnavailable) -> None:
        """A WARNING that answers cannot be stored, at most once a minute while they cannot:
        the first without a count (it would be 1, however many follow), the later ones with
        how many wait; the INFO at the end counts them all."""
        now = time.monotonic()
        if self._next_warning_at is not None and now < self._next_warning_at:
            return
        waiting = "" if self._next_warning_at is None else f" ({self._failing} waiting now)"
        self._next_warning_at = now + _WARNING_INTERVAL_S
        log.warning(
            "Idempotency-Key answers cannot be stored%s (%s): trying again until they are; "
            "meanwhile this process replays them and their claims keep the keys: a retry that "
            "reaches another gateway process gets 503 idempotency_unavailable while the "
            "database is away, 409 once it is back until the answer is stored",
            waiting,
            error,
        )

    def _settled_late(self, *, stored: bool) -> None:
        """An answer that could not be stored at first is settled; once all are, one INFO (and
        the next outage is warned of at once)."""
        self._failing -= 1
        self._stored_late += stored
        if self._failing == 0:
            if self._stored_late:
                log.info(
                    "%d Idempotency-Key answers that could not be stored at first are stored now",
                    self._stored_late,
                )
            self._stored_late = 0
            self._next_warning_at = None

    # ---- step 4 and the lifetime --------------------------------------------------------------

    async def purge(self) -> int:
        """Delete the expired rows; how many there were."""
        deleted = await self._run(
            partial(self._reads_db.execute, idempotent=True), _PURGE + " RETURNING 1", {}
        )
        return len(deleted)

    async def lifetime(self, _app: object) -> AsyncIterator[None]:
        """An aiohttp cleanup context: purge periodically; at the end, wait for the answers
        still being stored, and close the connections."""

        async def purging() -> None:
            while True:
                await asyncio.sleep(self._purge_interval_s)
                try:
                    await self.purge()
                except IdempotencyUnavailable as error:
                    log.warning("cannot delete expired Idempotency-Keys: %s", error)

        purger = asyncio.create_task(purging())
        yield
        purger.cancel()
        await self.close()

    async def drain(self) -> None:
        """Wait for the answers still being stored (those the database refuses: one last
        try each); stop the waiters' polling."""
        self._closing.set()
        for watcher in list(self._watchers):
            watcher.cancel()
        while self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        await self._answers.wait_idle()

    async def close(self) -> None:
        """:meth:`drain`, then close the connections."""
        await self.drain()
        await self._claims.wait_idle()
        for connection in (self._claims_db, self._answers_db, self._reads_db):
            await connection.close()

    @staticmethod
    def _background(work: Any, tasks: set[asyncio.Task[Any]]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _run(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``function(*args)``, again after a deadlock; a database error is
        :class:`IdempotencyUnavailable` (its first line, which a client is told: never a
        statement, nor the password, were libpq to quote it)."""
        try:
            for _ in range(_DEADLOCK_RETRIES - 1):
                try:
                    return await function(*args)
                except psycopg.errors.DeadlockDetected:
                    continue
            return await function(*args)
        except psycopg.Error as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            reason = without_password(reason, self._engine)
            raise IdempotencyUnavailable(
                f"the Idempotency-Key store cannot be used: {reason}"
            ) from None


def _kept(item: _Settle) -> bool:
    """A 2xx/4xx answer is kept; a 5xx, or none, releases the claim."""
    return item.answer is not None and item.answer.status < 500


def _settle_values(items: list[_Settle]) -> dict[str, str]:
    ordered = sorted(items, key=lambda item: (item.client, item.key))
    rows = [
        (
            item.client,
            item.key,
            item.token,
            item.answer.status if item.answer else None,
            b64encode(item.answer.body).decode() if item.answer else None,
        )
        for item in ordered
    ]
    return {"rows": json.dumps(rows)}


@dataclass(eq=False)
class _SharedClaim:
    store: PostgresIdempotency
    client: str
    key: str
    fingerprint: str
    token: str = field(repr=False)
    settled: bool = False

    def complete(self, answer: StoredAnswer) -> None:
        self._settle(answer)

    def abandon(self) -> None:
        self._settle(None)

    def _settle(self, answer: StoredAnswer | None) -> None:
        if not self.settled:  # settling twice is a no-op, as in the in-process store
            self.settled = True
            self.store.settle(self.client, self.key, self.token, answer, self.fingerprint)

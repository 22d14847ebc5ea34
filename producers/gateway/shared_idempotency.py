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
transaction in PostgreSQL: no ``BEGIN``/``COMMIT`` round trips; the read of the rows others
claimed follows on the same connection), in threads of the store's own (``threads``), so the
event loop never waits on the database. Unlike the in-process store there is no ``max_keys``:
rows live ``ttl_s``. PostgreSQL only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
    bindparam,
    delete,
    func,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

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
_t = idempotency_table


@dataclass(frozen=True)
class Row:
    """A live (unexpired) row of the table, as step 2 reads it."""

    fingerprint: str
    claim_token: str
    status: int | None
    body: bytes | None


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


# Each statement takes a whole batch (arrays, unnested), so a batch of claims or answers is one
# statement and one round trip (see producers.gateway.batches). Rows are locked in (client,
# key) order by every statement, so two gateways' statements never wait for each other in a
# cycle; a deadlock all the same is retried (_DEADLOCK_RETRIES). Written out in SQL: SQLAlchemy
# cannot cache the compiled form of an ON CONFLICT DO UPDATE, and building statements anew for
# every request cost more CPU than all the rest of the request.
_T = _t.name
_CLAIM = text(
    f"""
    INSERT INTO {_T} AS t (client, idempotency_key, fingerprint, claim_token, status, body,
                           expires_at)
    SELECT u.client, u.idempotency_key, u.fingerprint, u.claim_token, NULL, NULL,
           now() + make_interval(secs => :lease_s)
    FROM unnest(CAST(:clients AS text[]), CAST(:keys AS text[]), CAST(:fingerprints AS text[]),
                CAST(:tokens AS text[])) AS u(client, idempotency_key, fingerprint, claim_token)
    ORDER BY u.client, u.idempotency_key
    ON CONFLICT (client, idempotency_key) DO UPDATE
    SET fingerprint = excluded.fingerprint, claim_token = excluded.claim_token, status = NULL,
        body = NULL, expires_at = excluded.expires_at
    WHERE t.expires_at <= now()
    RETURNING t.client, t.idempotency_key, t.claim_token
    """
).bindparams(bindparam("lease_s", type_=Float))
_READ = text(
    f"""
    SELECT t.client, t.idempotency_key, t.fingerprint, t.claim_token, t.status, t.body
    FROM {_T} AS t
    JOIN unnest(CAST(:clients AS text[]), CAST(:keys AS text[])) AS u(client, idempotency_key)
      ON t.client = u.client AND t.idempotency_key = u.idempotency_key
    WHERE t.expires_at > now()
    """
)
_MINE = f"""
    WITH u AS MATERIALIZED (
        SELECT * FROM unnest(CAST(:clients AS text[]), CAST(:keys AS text[]),
                             CAST(:tokens AS text[]), CAST(:statuses AS integer[]),
                             CAST(:bodies AS bytea[]))
                      AS u(client, idempotency_key, claim_token, status, body)
    ), mine AS MATERIALIZED (
        SELECT t.client, t.idempotency_key, u.status, u.body
        FROM {_T} AS t
        JOIN u ON t.client = u.client AND t.idempotency_key = u.idempotency_key
              AND t.claim_token = u.claim_token
        ORDER BY t.client, t.idempotency_key
        FOR UPDATE OF t
    )
"""
_ANSWER = text(
    f"""{_MINE}
    UPDATE {_T} AS t
    SET status = mine.status, body = mine.body, expires_at = now() + make_interval(secs => :ttl_s)
    FROM mine
    WHERE t.client = mine.client AND t.idempotency_key = mine.idempotency_key
    """
).bindparams(bindparam("ttl_s", type_=Float))
_RELEASE = text(
    f"""{_MINE}
    DELETE FROM {_T} AS t USING mine
    WHERE t.client = mine.client AND t.idempotency_key = mine.idempotency_key
    """
)
_PURGE = delete(_t).where(_t.c.expires_at <= func.now())
#: Attempts of a statement that PostgreSQL ended to break a deadlock (SQLSTATE 40P01).
_DEADLOCK_RETRIES = 3
_DEADLOCK_DETECTED = "40P01"


@dataclass(frozen=True)
class _Claim:
    client: str
    key: str
    fingerprint: str
    token: str = field(repr=False)


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
        threads: int = 8,
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(f"a PostgreSQL engine is needed, got {engine.dialect.name}")
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="idempotency")
        self._ttl_s = ttl_s
        self._lease_s = claim_lease_s
        self._wait_s = wait_s
        self._poll_s = poll_s
        self._purge_interval_s = purge_interval_s
        self._settling: set[asyncio.Task[Any]] = set()
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
            token = secrets.token_hex(16)
            claimed, row = await self._claims.submit(_Claim(client, key, fingerprint, token))
            if claimed:
                return _SharedClaim(self, client, key, token)
            decision = decide(row, key, fingerprint)
            if decision == "gone":
                continue
            if isinstance(decision, Replay):
                return decision
            future: Future[StoredAnswer | None] = Future()
            assert row is not None
            self._background(self._watch(client, key, row.claim_token, future), self._watchers)
            return InFlight(future)

    def _claim_batch(self, claims: list[_Claim]) -> list[tuple[bool, Row | None]]:
        """Claim each key; for those claimed by someone else, their row (step 1 and 2)."""
        values = {
            "clients": [claim.client for claim in claims],
            "keys": [claim.key for claim in claims],
            "fingerprints": [claim.fingerprint for claim in claims],
            "tokens": [claim.token for claim in claims],
            "lease_s": self._lease_s,
        }
        with self._engine.connect() as connection:
            won = {
                (r.client, r.idempotency_key, r.claim_token)
                for r in connection.execute(_CLAIM, values)
            }
            lost = [claim for claim in claims if (claim.client, claim.key, claim.token) not in won]
            rows = self._read_rows(connection, [(claim.client, claim.key) for claim in lost])
        return [
            (True, None)
            if (claim.client, claim.key, claim.token) in won
            else (False, rows.get((claim.client, claim.key)))
            for claim in claims
        ]

    def _read(self, client: str, key: str) -> Row | None:
        with self._engine.connect() as connection:
            return self._read_rows(connection, [(client, key)]).get((client, key))

    @staticmethod
    def _read_rows(
        connection: Connection, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], Row]:
        if not keys:
            return {}
        values = {"clients": [client for client, _ in keys], "keys": [key for _, key in keys]}
        return {
            (found.client, found.idempotency_key): Row(
                found.fingerprint, found.claim_token, found.status, found.body
            )
            for found in connection.execute(_READ, values)
        }

    async def _watch(
        self, client: str, key: str, token: str, future: Future[StoredAnswer | None]
    ) -> None:
        """Settle ``future`` with the claimant's answer, or ``None`` once its claim is gone;
        left pending (the gateway answers 409) when nothing changed within ``wait_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        while loop.time() < deadline and not future.done():
            await asyncio.sleep(self._poll_s)
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

    def _settle_batch(self, settles: list[_Settle]) -> list[None]:
        """Store the answers (2xx/4xx) and release the other claims (step 3)."""
        answers = [item for item in settles if item.answer is not None and item.answer.status < 500]
        releases = [item for item in settles if item not in answers]
        with self._engine.connect() as connection:
            for statement, items in ((_ANSWER, answers), (_RELEASE, releases)):
                if items:
                    connection.execute(statement, {**_settle_values(items), "ttl_s": self._ttl_s})
        return [None] * len(settles)

    def settle(self, client: str, key: str, token: str, answer: StoredAnswer | None) -> None:
        """Store (or release) a claim in the background; at once when no loop runs."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._settle_batch([_Settle(client, key, token, answer)])
            return
        self._background(self._settle_logged(client, key, token, answer), self._settling)

    async def _settle_logged(
        self, client: str, key: str, token: str, answer: StoredAnswer | None
    ) -> None:
        try:
            await self._answers.submit(_Settle(client, key, token, answer))
        except IdempotencyUnavailable as error:
            log.warning(
                "an Idempotency-Key's answer could not be stored (%s): a retry with it gets "
                "409 until its claim expires in %g s",
                error,
                self._lease_s,
            )

    # ---- step 4 and the lifetime --------------------------------------------------------------

    def purge(self) -> int:
        """Delete the expired rows; how many there were."""
        with self._engine.connect() as connection:
            return connection.execute(_PURGE).rowcount

    async def lifetime(self, _app: object) -> AsyncIterator[None]:
        """An aiohttp cleanup context: purge periodically; at the end, wait for the answers
        still being stored."""

        async def purging() -> None:
            while True:
                await asyncio.sleep(self._purge_interval_s)
                try:
                    await self._run(self.purge)
                except IdempotencyUnavailable as error:
                    log.warning("cannot delete expired Idempotency-Keys: %s", error)

        purger = asyncio.create_task(purging())
        yield
        purger.cancel()
        await self.drain()
        self._threads.shutdown(wait=False)

    async def drain(self) -> None:
        """Wait for the answers still being stored; stop the waiters' polling."""
        for watcher in list(self._watchers):
            watcher.cancel()
        while self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        await self._answers.wait_idle()

    @staticmethod
    def _background(work: Any, tasks: set[asyncio.Task[Any]]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            for _ in range(_DEADLOCK_RETRIES - 1):
                try:
                    return await loop.run_in_executor(self._threads, function, *args)
                except DBAPIError as error:
                    if getattr(error.orig, "sqlstate", None) != _DEADLOCK_DETECTED:
                        raise
            return await loop.run_in_executor(self._threads, function, *args)
        except DBAPIError as error:
            reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
            raise IdempotencyUnavailable(
                f"the Idempotency-Key store cannot be used: {reason}"
            ) from None


def _settle_values(items: list[_Settle]) -> dict[str, list[Any]]:
    ordered = sorted(items, key=lambda item: (item.client, item.key))
    return {
        "clients": [item.client for item in ordered],
        "keys": [item.key for item in ordered],
        "tokens": [item.token for item in ordered],
        "statuses": [item.answer.status if item.answer else None for item in ordered],
        "bodies": [item.answer.body if item.answer else None for item in ordered],
    }


@dataclass(eq=False)
class _SharedClaim:
    store: PostgresIdempotency
    client: str
    key: str
    token: str = field(repr=False)
    settled: bool = False

    def complete(self, answer: StoredAnswer) -> None:
        self._settle(answer)

    def abandon(self) -> None:
        self._settle(None)

    def _settle(self, answer: StoredAnswer | None) -> None:
        if not self.settled:  # settling twice is a no-op, as in the in-process store
            self.settled = True
            self.store.settle(self.client, self.key, self.token, answer)

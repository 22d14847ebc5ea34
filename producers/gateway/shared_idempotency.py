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

Expiry uses the database's clock (``now()``), one clock for every replica. Every step is one
statement, run in autocommit mode (a statement is its own transaction in PostgreSQL, so no
``BEGIN``/``COMMIT`` round trips; the claim's read of another's row follows on the same
connection), in threads of the store's own (``threads``, so the event loop never waits on the
database and the store's statements never queue behind other blocking work). Unlike the
in-process store there is no ``max_keys``: rows live ``ttl_s``. PostgreSQL only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from pipeline.database import metadata
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


def _seconds_from_now(seconds: str) -> Any:
    return func.now() + func.make_interval(0, 0, 0, 0, 0, 0, bindparam(seconds, type_=Float))


# Built once, with bound parameters (named p_*: a column's own name is reserved): executed
# again with new values, each reuses its compiled form. Building and compiling them anew for
# every request cost more CPU than all the rest of the request.
_MINE = and_(
    _t.c.client == bindparam("p_client"),
    _t.c.idempotency_key == bindparam("p_key"),
    _t.c.claim_token == bindparam("p_token"),
)
# Written out: SQLAlchemy cannot cache the compiled form of an ON CONFLICT DO UPDATE.
_CLAIM = text(
    f"""
    INSERT INTO {_t.name} AS t (client, idempotency_key, fingerprint, claim_token, status, body,
                               expires_at)
    VALUES (:p_client, :p_key, :p_fingerprint, :p_token, NULL, NULL,
            now() + make_interval(secs => :lease_s))
    ON CONFLICT (client, idempotency_key) DO UPDATE
    SET fingerprint = excluded.fingerprint, claim_token = excluded.claim_token, status = NULL,
        body = NULL, expires_at = excluded.expires_at
    WHERE t.expires_at <= now()
    RETURNING t.claim_token
    """
).bindparams(bindparam("lease_s", type_=Float))
_READ = select(_t.c.fingerprint, _t.c.claim_token, _t.c.status, _t.c.body).where(
    _t.c.client == bindparam("p_client"),
    _t.c.idempotency_key == bindparam("p_key"),
    _t.c.expires_at > func.now(),
)
_ANSWER = (
    update(_t)
    .where(_MINE)
    .values(
        status=bindparam("p_status"),
        body=bindparam("p_body"),
        expires_at=_seconds_from_now("ttl_s"),
    )
)
_RELEASE = delete(_t).where(_MINE)
_PURGE = delete(_t).where(_t.c.expires_at <= func.now())


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

    def __repr__(self) -> str:
        return f"PostgresIdempotency(ttl_s={self._ttl_s:g})"

    # ---- step 1 and 2 -----------------------------------------------------------------------

    async def begin(self, client: str, key: str, fingerprint: str) -> Replay | InFlight | Settle:
        while True:
            token = secrets.token_hex(16)
            claimed, row = await self._run(self._claim, client, key, fingerprint, token)
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

    def _claim(
        self, client: str, key: str, fingerprint: str, token: str
    ) -> tuple[bool, Row | None]:
        values = {
            "p_client": client,
            "p_key": key,
            "p_fingerprint": fingerprint,
            "p_token": token,
            "lease_s": self._lease_s,
        }
        with self._engine.connect() as connection:
            if connection.execute(_CLAIM, values).first() is not None:
                return True, None
            return False, self._read(client, key, connection)

    def _read(self, client: str, key: str, connection: Connection | None = None) -> Row | None:
        values = {"p_client": client, "p_key": key}
        if connection is None:
            with self._engine.connect() as connection:
                found = connection.execute(_READ, values).first()
        else:
            found = connection.execute(_READ, values).first()
        if found is None:
            return None
        return Row(found.fingerprint, found.claim_token, found.status, found.body)

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

    def _store(self, client: str, key: str, token: str, answer: StoredAnswer | None) -> None:
        mine = {"p_client": client, "p_key": key, "p_token": token}
        with self._engine.connect() as connection:
            if answer is None or answer.status >= 500:
                connection.execute(_RELEASE, mine)
            else:
                values = {"p_status": answer.status, "p_body": answer.body, "ttl_s": self._ttl_s}
                connection.execute(_ANSWER, {**mine, **values})

    def settle(self, client: str, key: str, token: str, answer: StoredAnswer | None) -> None:
        """Store (or release) a claim in the background; at once when no loop runs."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._store(client, key, token, answer)
            return
        self._background(self._settle_logged(client, key, token, answer), self._settling)

    async def _settle_logged(
        self, client: str, key: str, token: str, answer: StoredAnswer | None
    ) -> None:
        try:
            await self._run(self._store, client, key, token, answer)
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

    @staticmethod
    def _background(work: Any, tasks: set[asyncio.Task[Any]]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, function, *args)
        except DBAPIError as error:
            reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
            raise IdempotencyUnavailable(
                f"the Idempotency-Key store cannot be used: {reason}"
            ) from None


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

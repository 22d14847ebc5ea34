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

Expiry uses the database's clock (``now()``), one clock for every replica. Statements run in
threads (``asyncio.to_thread``) so the event loop never waits on the database. Unlike the
in-process store there is no ``max_keys``: rows live ``ttl_s``. PostgreSQL only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Table,
    and_,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Engine
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


def _seconds(value: float) -> Any:
    return func.make_interval(0, 0, 0, 0, 0, 0, value)


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
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(f"a PostgreSQL engine is needed, got {engine.dialect.name}")
        self._engine = engine
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
        claim = (
            insert(_t)
            .values(
                client=client,
                idempotency_key=key,
                fingerprint=fingerprint,
                claim_token=token,
                status=None,
                body=None,
                expires_at=func.now() + _seconds(self._lease_s),
            )
            .on_conflict_do_update(
                index_elements=[_t.c.client, _t.c.idempotency_key],
                set_={
                    "fingerprint": fingerprint,
                    "claim_token": token,
                    "status": None,
                    "body": None,
                    "expires_at": func.now() + _seconds(self._lease_s),
                },
                where=_t.c.expires_at <= func.now(),
            )
            .returning(_t.c.claim_token)
        )
        with self._engine.begin() as connection:
            if connection.execute(claim).first() is not None:
                return True, None
        return False, self._read(client, key)

    def _read(self, client: str, key: str) -> Row | None:
        query = select(_t.c.fingerprint, _t.c.claim_token, _t.c.status, _t.c.body).where(
            _t.c.client == client, _t.c.idempotency_key == key, _t.c.expires_at > func.now()
        )
        with self._engine.connect() as connection:
            found = connection.execute(query).first()
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
        mine = and_(_t.c.client == client, _t.c.idempotency_key == key, _t.c.claim_token == token)
        with self._engine.begin() as connection:
            if answer is None or answer.status >= 500:
                connection.execute(delete(_t).where(mine))
            else:
                connection.execute(
                    update(_t)
                    .where(mine)
                    .values(
                        status=answer.status,
                        body=answer.body,
                        expires_at=func.now() + _seconds(self._ttl_s),
                    )
                )

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
        with self._engine.begin() as connection:
            return connection.execute(delete(_t).where(_t.c.expires_at <= func.now())).rowcount

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
            return await asyncio.to_thread(function, *args)
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

"""Idempotency keys: a repeated request gets the first answer instead of a second effect.

Keys are scoped per client (the same key from two clients is two keys). For each key the store
remembers the fingerprint of the first body and, once there is one, the first answer:

1. :meth:`IdempotencyStore.begin` with a new key *claims* it: the caller does the work, then
   settles the claim with :meth:`~IdempotencyStore.complete` (an answer) or
   :meth:`~IdempotencyStore.abandon` (no answer: nothing was done). Settle when the outcome is
   known, not when the caller stops waiting: the gateway completes a claim from the event's
   delivery report, which may come after its own 503 for a timeout;
2. the same key while the first is still in flight gets a future of the first's answer instead of
   doing the work again (the gateway waits for it a bounded time, then answers 409); ``None``
   there means the first was abandoned, and the caller begins anew;
3. the same key after the first completed gets the stored answer (a *replay*);
4. the same key with a different body (another fingerprint) is :class:`IdempotencyKeyReused`;
5. answers with a 5xx status are handed to the waiters of (2) but never remembered, so the
   client's retry does the work again; 2xx/4xx answers are kept ``ttl_s`` seconds after they
   were made, at most ``max_keys`` of them.

Past ``max_keys`` the oldest answer is forgotten before its TTL, so that a full store still
serves (refusing every new key for up to ``ttl_s`` would stop the clients that do send keys,
the careful ones, until the oldest expire): a retry with a key forgotten so would produce
again. That is never silent: each such key is handed to ``on_early_eviction`` with how long it
was remembered, which the gateway counts (``gateway_idempotency_keys_evicted_total``) and logs
at WARNING at most once a minute (:class:`EvictionWarning`), saying how long keys are now kept.

This store lives in one process's memory. Several gateway processes each have their own, so a
retry that lands on another one would produce again: they share
:class:`producers.gateway.shared_idempotency.PostgresIdempotency` instead, a table with the
same claim / complete / replay states. The gateway asks either through :class:`IdempotencyKeys`
(:class:`LocalIdempotency` adapts this one).

Pure apart from the futures of (2), which are :class:`concurrent.futures.Future` so that nothing
here needs an event loop (``asyncio.wrap_future`` awaits them). Not thread-safe: the gateway
calls it from its event loop only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from pipeline.errors import PipelineError

Clock = Callable[[], float]

MAX_KEY_LENGTH = 255

log = logging.getLogger("producers.gateway")


def fingerprint(request_type: str, body: Any) -> str:
    """A digest of what was asked: the request type and the JSON body, canonically written.

    Key order and whitespace do not change it, so a client that re-serializes its retry is
    still recognized; any change of a value does.
    """
    canonical = json.dumps(
        [request_type, body],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        # The gateway reads a body's non-integer numbers as Decimal (exactly as sent): written
        # as the float they were read as before (float(Decimal(s)) == float(s)), so every body
        # keeps the fingerprint it had, the keys a shared store holds already included.
        default=_as_float,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _as_float(value: object) -> float:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an Idempotency-Key, or ``None`` when it can."""
    if not key:
        return "must not be empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"must be at most {MAX_KEY_LENGTH} characters, got {len(key)}"
    if not all(" " < char <= "~" for char in key):
        return "must be printable ASCII without spaces"
    return None


@dataclass(frozen=True)
class StoredAnswer:
    """An HTTP answer as it is replayed: the status and the exact body bytes."""

    status: int
    body: bytes


class IdempotencyKeyReused(PipelineError):
    """The key was first used for a different request."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request body; "
            "use a new key for a new request"
        )


@dataclass(eq=False)
class _Pending:
    fingerprint: str
    claimed_at: float
    future: Future[StoredAnswer | None] = field(default_factory=Future)


@dataclass(frozen=True)
class _Done:
    fingerprint: str
    answer: StoredAnswer
    expires_at: float


_Scope = tuple[str, str]  # (client, key)


@dataclass(frozen=True, eq=False)
class Claim:
    """The right and duty to do the work for a key, then settle it."""

    scope: _Scope
    _pending: _Pending


@dataclass(frozen=True)
class Replay:
    """The key's first answer, to send again as it was."""

    answer: StoredAnswer


@dataclass(frozen=True)
class InFlight:
    """The key's first request is still working: await its answer (``None``: begin anew).

    What is known of its claim when it was found, for the 409 that follows a wait in vain:
    ``claimed_s_ago``, when the store knows when it was claimed (``None``: it does not; the
    shared store's rows keep only when the claim expires, and the lease it was given depends on
    the settings of the gateway that claimed it, which may not be this one's), and
    ``expires_in_s``, when the claim frees itself (``None``: never, it is settled by this
    process's own delivery report)."""

    future: Future[StoredAnswer | None]
    claimed_s_ago: float | None = None
    expires_in_s: float | None = None


Begin = Claim | Replay | InFlight


class IdempotencyStore:
    """Idempotency-Key -> first answer, per client, with a time to live and a maximum size."""

    def __init__(
        self,
        *,
        ttl_s: float,
        max_keys: int,
        clock: Clock = time.monotonic,
        on_early_eviction: Callable[[float], None] | None = None,
    ) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self._ttl_s = ttl_s
        self._max_keys = max_keys
        self._clock = clock
        # Told how long each key forgotten before its TTL was remembered (the store is full).
        self._on_early_eviction = on_early_eviction
        self._pending: dict[_Scope, _Pending] = {}
        # In order of completion, hence of expiry (one TTL for all).
        self._done: OrderedDict[_Scope, _Done] = OrderedDict()

    def __len__(self) -> int:
        """How many answers are remembered (not counting requests in flight)."""
        self._expire(self._clock())
        return len(self._done)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def begin(self, client: str, key: str, fingerprint: str) -> Begin:
        """What to do with a request carrying ``key``; raises :class:`IdempotencyKeyReused`."""
        scope = (client, key)
        self._expire(self._clock())
        done = self._done.get(scope)
        if done is not None:
            if done.fingerprint != fingerprint:
                raise IdempotencyKeyReused(key)
            return Replay(done.answer)
        pending = self._pending.get(scope)
        if pending is not None:
            if pending.fingerprint != fingerprint:
                raise IdempotencyKeyReused(key)
            return InFlight(pending.future, claimed_s_ago=self._clock() - pending.claimed_at)
        pending = _Pending(fingerprint, self._clock())
        self._pending[scope] = pending
        return Claim(scope, pending)

    def complete(self, claim: Claim, answer: StoredAnswer) -> None:
        """Settle ``claim`` with its answer: waiters get it; it is remembered unless a 5xx."""
        if not self._release(claim):
            return
        now = self._clock()
        if answer.status < 500:
            self._done[claim.scope] = _Done(
                claim._pending.fingerprint, answer, expires_at=now + self._ttl_s
            )
            self._done.move_to_end(claim.scope)
            self._expire(now)  # expired keys make room first: only live ones are evicted
            while len(self._done) > self._max_keys:
                _, evicted = self._done.popitem(last=False)
                if self._on_early_eviction is not None:
                    self._on_early_eviction(now - (evicted.expires_at - self._ttl_s))
        self._expire(now)
        _settle(claim._pending.future, answer)

    def abandon(self, claim: Claim) -> None:
        """Settle ``claim`` without an answer: nothing is remembered; waiters begin anew."""
        if self._release(claim):
            _settle(claim._pending.future, None)

    def _release(self, claim: Claim) -> bool:
        # Settling twice is a no-op (complete, then abandon in a ``finally``).
        if self._pending.get(claim.scope) is not claim._pending:
            return False
        del self._pending[claim.scope]
        return True

    def _expire(self, now: float) -> None:
        while self._done:
            oldest = next(iter(self._done.values()))
            if oldest.expires_at > now:
                return
            self._done.popitem(last=False)


class EvictionWarning:
    """``on_early_eviction`` for the gateway: counts every key forgotten before its TTL and
    says so at WARNING, at most once per ``interval_s``, with how long keys are now kept."""

    def __init__(
        self,
        *,
        ttl_s: float,
        max_keys: int,
        count: Callable[[], None],
        clock: Clock = time.monotonic,
        interval_s: float = 60.0,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_keys = max_keys
        self._count = count
        self._clock = clock
        self._interval_s = interval_s
        self._next_warning_at: float | None = None

    def __call__(self, remembered_s: float) -> None:
        self._count()
        now = self._clock()
        if self._next_warning_at is not None and now < self._next_warning_at:
            return
        self._next_warning_at = now + self._interval_s
        log.warning(
            "the Idempotency-Key store is full (%s keys, PIPELINE_GATEWAY__IDEMPOTENCY_MAX_KEYS): "
            "keys are now remembered for only about %.0f s instead of %g s, and a retry with a "
            "key forgotten sooner produces a second event; raise "
            "PIPELINE_GATEWAY__IDEMPOTENCY_MAX_KEYS or share the keys in PostgreSQL "
            "(PIPELINE_GATEWAY__IDEMPOTENCY_STORE=postgres)",
            f"{self._max_keys:,}",
            remembered_s,
            self._ttl_s,
        )


def _settle(future: Future[StoredAnswer | None], answer: StoredAnswer | None) -> None:
    # A waiter may have cancelled the shared future; the answer is still kept (or not) above.
    if future.set_running_or_notify_cancel():
        future.set_result(answer)


# ---- the store as the gateway uses it: this process's, or one shared by every process -------


class Settle(Protocol):
    """A claimed key, settled once its outcome is known (see steps 1 and 5 above)."""

    def complete(self, answer: StoredAnswer) -> None: ...

    def abandon(self) -> None: ...


class IdempotencyKeys(Protocol):
    """What the gateway asks of an Idempotency-Key store; :class:`IdempotencyKeyReused` or
    :class:`IdempotencyUnavailable` from :meth:`begin`."""

    async def begin(
        self, client: str, key: str, fingerprint: str
    ) -> Replay | InFlight | Settle: ...


class IdempotencyUnavailable(PipelineError):
    """A shared store could not be asked (its database is away): nothing was produced."""


@dataclass(frozen=True)
class _LocalSettle:
    store: IdempotencyStore
    claim: Claim

    def complete(self, answer: StoredAnswer) -> None:
        self.store.complete(self.claim, answer)

    def abandon(self) -> None:
        self.store.abandon(self.claim)


class LocalIdempotency:
    """:class:`IdempotencyStore` (this process's memory) as :class:`IdempotencyKeys`."""

    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store

    async def begin(self, client: str, key: str, fingerprint: str) -> Replay | InFlight | Settle:
        begun = self.store.begin(client, key, fingerprint)
        if isinstance(begun, Claim):
            return _LocalSettle(self.store, begun)
        return begun


def local_idempotency(
    *, ttl_s: float, max_keys: int, clock: Clock, count_eviction: Callable[[], None]
) -> LocalIdempotency:
    """This process's store, warning (:class:`EvictionWarning`) when it forgets keys early."""
    warning = EvictionWarning(ttl_s=ttl_s, max_keys=max_keys, count=count_eviction, clock=clock)
    return LocalIdempotency(
        IdempotencyStore(ttl_s=ttl_s, max_keys=max_keys, clock=clock, on_early_eviction=warning)
    )

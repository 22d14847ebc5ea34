"""Who may send what: the API key or JWT of a request, checked against what the gateway knows.

1. with no key in the database and no JWT configured the gateway is *open*: every request
   passes, as the peer it comes from (the gateway says so once at start, and again if it
   becomes open; with ``--workers``, one worker says it for all);
2. otherwise a request must carry ``Authorization: Bearer <credential>``: a valid, unrevoked
   API key (``pgk_...``), or, when JWT is configured, any other token is checked as a JWT (see
   :mod:`producers.gateway.tokens`); else 401 ``unauthorized`` with ``WWW-Authenticate:
   Bearer``;
3. and the key or token must be allowed the request type: else 403 ``forbidden``.

The client of an authenticated request (its rate limit and Idempotency-Key scope) is the key's
name, or ``jwt:<sub>`` for a token. The keys are read from the database at start and then
every ``refresh_s`` seconds by :class:`KeyRefresher`, so a key added or revoked takes effect on
every running gateway within that time, without a restart.

While the database cannot be read, the keys read last are kept, but for at most
``max_stale_s`` after that read (a bounded fail-open: a database restart or failover costs
nothing, and a key revoked meanwhile is still refused within that bound): past it, the
gateway no longer knows who may send, and until the keys are read again

- a request with an API key (``pgk_...``, well formed) is 503 ``keys_unavailable`` with
  ``Retry-After`` (the refresh interval), as is every request of a gateway the keys left open
  (a first key may have been added since), while a JWT is still verified as usual (it needs
  no database) and a request without credentials is still 401;
- :meth:`Authorizer.keys_problem` says so, for ``GET /healthz`` (503);
- the log says it when the reads start failing, when the bound is passed, every
  ``_REPEAT_WARNING_S`` while it lasts, and when the keys are read again.

No error message, log line or ``repr`` here carries a key or a token.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from sqlalchemy.exc import DBAPIError

from pipeline.errors import PipelineError
from producers.gateway.answers import ErrorAnswer
from producers.gateway.keys import KEY_PREFIX, ApiKey, KeyRing, bearer_token, key_id_of
from producers.gateway.tokens import TokenRejected, TokenVerifier

__all__ = [
    "DEFAULT_MAX_STALE_S",
    "DEFAULT_REFRESH_S",
    "Authorizer",
    "Client",
    "KeyLoader",
    "KeyRefresher",
]

log = logging.getLogger("producers.gateway")

#: How often a running gateway reads the keys again.
DEFAULT_REFRESH_S = 5.0
#: How long the keys read last are used while they cannot be read again.
DEFAULT_MAX_STALE_S = 60.0
#: How often the log says again that the keys cannot be read, while it lasts.
_REPEAT_WARNING_S = 60.0

KeyLoader = Callable[[], Sequence[ApiKey]]
"""Reads every key record (revoked ones too) from where they are kept; blocking I/O."""

_CHALLENGE = 'Bearer realm="pipeline-gateway"'


class Client(Protocol):
    """An authenticated client: an :class:`ApiKey` or a
    :class:`~producers.gateway.tokens.TokenClient`."""

    @property
    def name(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def request_types(self) -> frozenset[str]: ...

    def may_send(self, request_type: str) -> bool: ...


class Authorizer:
    """The decisions of steps 1 to 3 over the current :class:`KeyRing` and the JWT verifier.

    ``clock`` (monotonic seconds) times how old the keys are: :meth:`keys_read` says when they
    were read, and past ``max_stale_s`` from then (``None``, the default: never, as for keys
    given here rather than read from a database) they are no longer trusted."""

    def __init__(
        self,
        ring: KeyRing | None = None,
        tokens: TokenVerifier | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ring = ring or KeyRing()
        self.tokens = tokens
        self.clock = clock
        #: How long the keys are trusted after they were read (``None``: for ever).
        self.max_stale_s: float | None = None
        #: ``Retry-After`` of a 503 ``keys_unavailable``: when the keys are read next.
        self.retry_after_s = DEFAULT_REFRESH_S
        #: When the keys in :attr:`ring` were read (``clock``), and why the last read failed.
        self.read_at: float | None = None
        self.unreadable: str | None = None

    @property
    def open(self) -> bool:
        """No key and no JWT: every request passes (not once the keys are stale: a first key
        may have been added since)."""
        return self.keys_open and self.keys_problem() is None

    @property
    def keys_open(self) -> bool:
        """What the keys last read say: no key (and no JWT), the gateway is open."""
        return self.ring.open and self.tokens is None

    def keys_read(self, ring: KeyRing, at: float) -> None:
        """Use ``ring``, read (its read started) at ``at`` by :attr:`clock`."""
        self.ring = ring
        self.read_at = at
        self.unreadable = None

    def keys_age(self) -> float | None:
        """Seconds since the keys in use were read (``None``: they were not read)."""
        return None if self.read_at is None else self.clock() - self.read_at

    def keys_problem(self, *, why: bool = True) -> str | None:
        """Why the keys are no longer trusted (read longer than ``max_stale_s`` ago), or
        ``None``; ``why``: with the database's error (for ``/healthz`` and the log, not for
        a client: it may name the database's host)."""
        if self.max_stale_s is None or self.read_at is None:
            return None
        age = self.clock() - self.read_at
        if age <= self.max_stale_s:
            return None
        reason = f" ({self.unreadable})" if why and self.unreadable else ""
        refused = (
            # Open when last read: a first key may have been added since, so every request.
            "every request is refused (the gateway had no key: a first one may have been "
            "added since)"
            if self.keys_open
            else "requests with an API key are refused"
        )
        return (
            f"the API keys could not be read for {age:.0f} s{reason}, longer than "
            f"PIPELINE_GATEWAY__KEYS_MAX_STALE_S ({self.max_stale_s:g} s): {refused} until "
            "they are read again"
        )

    def _refuse_if_stale(self) -> None:
        problem = self.keys_problem(why=False)
        if problem is not None:
            raise ErrorAnswer(
                503,
                "keys_unavailable",
                problem,
                headers={"Retry-After": str(max(1, math.ceil(self.retry_after_s)))},
            )

    def authenticate(self, authorization: str | None) -> Client | None:
        """The client of a request (``None`` when the gateway is open), or 401; 503 when the
        keys it needs are stale."""
        if self.keys_open:
            self._refuse_if_stale()  # open once: a key may have closed it since
            return None
        token = bearer_token(authorization)
        if token is None:
            what, which = (
                ("<key>", "an API key")
                if self.tokens is None
                else ("<key or JWT>", "an API key or a JWT")
            )
            raise _unauthorized(
                f"send {which}: Authorization: Bearer {what}"
                if authorization is None
                else f"the Authorization header must be 'Bearer {what}'"
            )
        if self.tokens is not None and not token.startswith(KEY_PREFIX):
            try:
                return self.tokens.verify(token)
            except TokenRejected as rejected:
                raise _unauthorized(str(rejected)) from None
        if key_id_of(token) is not None:  # an API key: only the keys can tell
            self._refuse_if_stale()
        key = self.ring.authenticate(token)
        if key is None:
            raise _unauthorized("the API key is not valid (unknown, mistyped or revoked)")
        return key

    @staticmethod
    def authorise(client: Client | None, request_type: str) -> None:
        """403 unless ``client`` (``None``: the gateway is open) may send ``request_type``."""
        if client is None or client.may_send(request_type):
            return
        allowed = ", ".join(sorted(client.request_types)) or "none"
        kind = "key" if isinstance(client, ApiKey) else "token"
        raise ErrorAnswer(
            403,
            "forbidden",
            f"{client.label} may not send {request_type!r} requests; it may send: {allowed}",
            [{"field": "type", "message": f"not allowed for this {kind}"}],
        )


def _unauthorized(message: str) -> ErrorAnswer:
    return ErrorAnswer(401, "unauthorized", message, headers={"WWW-Authenticate": _CHALLENGE})


class KeyRefresher:
    """Keeps an :class:`Authorizer`'s keys current: read at start, then every ``refresh_s``;
    while they cannot be read, the ones read last are used for at most ``max_stale_s`` after
    that read (the authorizer refuses keys past it)."""

    def __init__(
        self,
        authorizer: Authorizer,
        load: KeyLoader,
        *,
        refresh_s: float = DEFAULT_REFRESH_S,
        max_stale_s: float = DEFAULT_MAX_STALE_S,
        announce: bool = True,
        on_read: Callable[[float], None] | None = None,
    ) -> None:
        """``announce``: say what the keys make of the gateway (open, or how many keys), at
        start and when it changes; ``False`` for all but one of the processes of
        ``pipeline gateway --workers``, so that one gateway says it once. ``on_read``: given
        the wall-clock time (Unix seconds) of every read that succeeded (a metric)."""
        if not refresh_s > 0:
            raise ValueError(f"refresh_s must be > 0, got {refresh_s!r}")
        if not max_stale_s > refresh_s:
            raise ValueError(
                f"max_stale_s must be more than refresh_s ({refresh_s!r}), got {max_stale_s!r}"
            )
        self.authorizer = authorizer
        self._load = load
        self.refresh_s = refresh_s
        self.max_stale_s = max_stale_s
        self.announce = announce
        self._on_read = on_read
        authorizer.max_stale_s = max_stale_s
        authorizer.retry_after_s = refresh_s
        #: While reads fail: when the first of them failed, when the log last said so, and
        #: whether it said that the keys are stale.
        self._failing_since: float | None = None
        self._warned_at = 0.0
        self._said_stale = False

    def refresh(self, keys: Sequence[ApiKey], *, at: float | None = None) -> None:
        """Use ``keys`` from now on (read at ``at``, by the authorizer's clock: now by
        default); a warning whenever the gateway becomes open."""
        authorizer = self.authorizer
        was_open = authorizer.keys_open
        authorizer.keys_read(KeyRing(keys), authorizer.clock() if at is None else at)
        if not self.announce:
            return
        if authorizer.keys_open and not was_open:
            log.warning(_OPEN_WARNING)
        elif was_open and not authorizer.keys_open:
            log.info("API keys exist now: every request needs one (Authorization: Bearer <key>)")

    def _load_once_more_if_dropped(self) -> list[ApiKey]:
        """The keys; read once more when the database had dropped the pooled connection
        (a restart, a failover, ``pg_terminate_backend``): SQLAlchemy discarded it, so a single
        dropped connection costs nothing and logs nothing."""
        try:
            return list(self._load())
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            return list(self._load())

    def _read(self) -> list[ApiKey]:
        """:meth:`_load_once_more_if_dropped`, and ``on_read`` if it succeeds (in a thread)."""
        wall = time.time()
        keys = self._load_once_more_if_dropped()
        if self._on_read is not None:
            self._on_read(wall)
        return keys

    async def first(self) -> None:
        """The first read, at start: its failure stops the gateway (it cannot know who may
        send), and an open gateway says so (one WARNING line)."""
        started = self.authorizer.clock()
        try:
            keys = await asyncio.to_thread(self._read)
        except Exception as error:
            raise PipelineError(f"cannot read the API keys: {_first_line(error)}") from None
        self.authorizer.keys_read(KeyRing(keys), started)
        ring, tokens = self.authorizer.ring, self.authorizer.tokens
        if not self.announce:
            return
        if self.authorizer.keys_open:
            log.warning(_OPEN_WARNING)
        elif tokens is None:
            log.info(
                "%d API keys loaded (%d revoked); every request needs one", len(ring), ring.revoked
            )
        else:
            log.info(
                "%d API keys loaded (%d revoked), and JWTs of %s for %s accepted; every request "
                "needs a key or a token",
                len(ring),
                ring.revoked,
                tokens.settings.issuer,
                tokens.settings.audience,
            )

    async def run(self) -> None:
        """:meth:`read_again` every ``refresh_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.read_again()

    async def read_again(self) -> None:
        """Read the keys once more: used from now on, or, if the read fails, the known ones
        kept (for at most ``max_stale_s`` after they were read) and the failure told."""
        started = self.authorizer.clock()
        try:
            keys = await asyncio.to_thread(self._read)
        except Exception as error:  # the database away: keep the keys we have, a while
            self._failed(_first_line(error))
            return
        if self._failing_since is not None:
            log.info(
                "the API keys are read again, after %.0f s without%s",
                started - self._failing_since,
                ": requests with an API key are taken again" if self._said_stale else "",
            )
        self._failing_since = None
        self._said_stale = False
        self.refresh(keys, at=started)

    def _failed(self, reason: str) -> None:
        """Say that the keys cannot be read: at the first failure, when the keys read last
        are used no more, and every ``_REPEAT_WARNING_S`` while it lasts."""
        authorizer = self.authorizer
        authorizer.unreadable = reason
        now = authorizer.clock()
        age = authorizer.keys_age() or 0.0
        stale = authorizer.keys_problem() is not None
        first = self._failing_since is None
        if first:
            self._failing_since = now
        elif not (stale and not self._said_stale) and now - self._warned_at < _REPEAT_WARNING_S:
            return
        self._warned_at = now
        self._said_stale = stale
        if stale:
            log.warning(
                "cannot read the API keys (%s), read last %.0f s ago: past "
                "PIPELINE_GATEWAY__KEYS_MAX_STALE_S (%g s), requests with an API key are "
                "refused (503 keys_unavailable) and GET /healthz answers 503 until they are "
                "read again",
                reason,
                age,
                self.max_stale_s,
            )
        else:
            log.warning(
                "cannot read the API keys (%s): the ones read %.0f s ago are used for %.0f s "
                "more (PIPELINE_GATEWAY__KEYS_MAX_STALE_S, %g s), then requests with an API "
                "key are refused until they are read again",
                reason,
                age,
                max(0.0, self.max_stale_s - age),
                self.max_stale_s,
            )

    async def lifetime(self, _app: object) -> AsyncIterator[None]:
        """An aiohttp cleanup context: the first read before serving, then :meth:`run`."""
        await self.first()
        task = asyncio.create_task(self.run())
        yield
        task.cancel()


def _first_line(error: Exception) -> str:
    # A database error's first line names the problem; the rest is the SQL statement.
    cause = getattr(error, "orig", None) or error
    return (str(cause).strip().splitlines() or [type(error).__name__])[0]


_OPEN_WARNING = (
    "no API key exists: the gateway is open, anyone who reaches it may send any request type "
    "(add one with `pipeline gateway keys add NAME --types ...`)"
)

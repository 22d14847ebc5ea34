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
every running gateway within that time, without a restart. No error message, log line or
``repr`` here carries a key or a token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from sqlalchemy.exc import DBAPIError

from pipeline.errors import PipelineError
from producers.gateway.answers import ErrorAnswer
from producers.gateway.keys import KEY_PREFIX, ApiKey, KeyRing, bearer_token
from producers.gateway.tokens import TokenRejected, TokenVerifier

__all__ = ["DEFAULT_REFRESH_S", "Authorizer", "Client", "KeyLoader", "KeyRefresher"]

log = logging.getLogger("producers.gateway")

#: How often a running gateway reads the keys again.
DEFAULT_REFRESH_S = 5.0

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
    """The decisions of steps 1 to 3 over the current :class:`KeyRing` and the JWT verifier."""

    def __init__(self, ring: KeyRing | None = None, tokens: TokenVerifier | None = None) -> None:
        self.ring = ring or KeyRing()
        self.tokens = tokens

    @property
    def open(self) -> bool:
        return self.ring.open and self.tokens is None

    def authenticate(self, authorization: str | None) -> Client | None:
        """The client of a request (``None`` when the gateway is open), or 401."""
        if self.open:
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
    """Keeps an :class:`Authorizer`'s keys current: read at start, then every ``refresh_s``."""

    def __init__(
        self,
        authorizer: Authorizer,
        load: KeyLoader,
        *,
        refresh_s: float = DEFAULT_REFRESH_S,
        announce: bool = True,
    ) -> None:
        """``announce``: say what the keys make of the gateway (open, or how many keys), at
        start and when it changes; ``False`` for all but one of the processes of
        ``pipeline gateway --workers``, so that one gateway says it once."""
        if not refresh_s > 0:
            raise ValueError(f"refresh_s must be > 0, got {refresh_s!r}")
        self.authorizer = authorizer
        self._load = load
        self.refresh_s = refresh_s
        self.announce = announce

    def refresh(self, keys: Sequence[ApiKey]) -> None:
        """Use ``keys`` from now on; a warning whenever the gateway becomes open."""
        was_open = self.authorizer.open
        self.authorizer.ring = KeyRing(keys)
        if not self.announce:
            return
        if self.authorizer.open and not was_open:
            log.warning(_OPEN_WARNING)
        elif was_open and not self.authorizer.open:
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

    async def first(self) -> None:
        """The first read, at start: its failure stops the gateway (it cannot know who may
        send), and an open gateway says so (one WARNING line)."""
        try:
            keys = await asyncio.to_thread(self._load_once_more_if_dropped)
        except Exception as error:
            raise PipelineError(f"cannot read the API keys: {_first_line(error)}") from None
        self.authorizer.ring = KeyRing(keys)
        ring, tokens = self.authorizer.ring, self.authorizer.tokens
        if not self.announce:
            return
        if self.authorizer.open:
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
        """Read the keys again every ``refresh_s`` until cancelled; a failed read keeps the
        keys known so far (warned once per failure streak)."""
        failing = False
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                keys = await asyncio.to_thread(self._load_once_more_if_dropped)
            except Exception as error:  # the database away: keep the keys we have
                if not failing:
                    log.warning(
                        "cannot read the API keys (keeping the known ones): %s",
                        _first_line(error),
                    )
                failing = True
                continue
            if failing:
                log.info("the API keys can be read again")
            failing = False
            self.refresh(keys)

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

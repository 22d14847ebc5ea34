"""Who may send what: the API key of a request, checked against the keys the gateway knows.

1. with no key in the database the gateway is *open*: every request passes, as the peer it
   comes from (the gateway says so once at start, and again if it becomes open);
2. otherwise a request must carry ``Authorization: Bearer <key>`` with a valid, unrevoked key:
   else 401 ``unauthorized`` with ``WWW-Authenticate: Bearer``;
3. and the key must be allowed the request type: else 403 ``forbidden``.

The client of an authenticated request (its rate limit and Idempotency-Key scope) is the key's
name. The keys are read from the database at start and then every ``refresh_s`` seconds by
:class:`KeyRefresher`, so a key added or revoked takes effect on every running gateway within
that time, without a restart. No error message, log line or ``repr`` here carries a key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from pipeline.errors import PipelineError
from producers.gateway.answers import ErrorAnswer
from producers.gateway.keys import ApiKey, KeyRing, bearer_token

__all__ = ["DEFAULT_REFRESH_S", "Authorizer", "KeyLoader", "KeyRefresher"]

log = logging.getLogger("producers.gateway")

#: How often a running gateway reads the keys again.
DEFAULT_REFRESH_S = 5.0

KeyLoader = Callable[[], Sequence[ApiKey]]
"""Reads every key record (revoked ones too) from where they are kept; blocking I/O."""

_CHALLENGE = 'Bearer realm="pipeline-gateway"'


class Authorizer:
    """The decisions of steps 1 to 3 over the current :class:`KeyRing`."""

    def __init__(self, ring: KeyRing | None = None) -> None:
        self.ring = ring or KeyRing()

    @property
    def open(self) -> bool:
        return self.ring.open

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        """The key of a request (``None`` when the gateway is open), or 401."""
        if self.ring.open:
            return None
        token = bearer_token(authorization)
        if token is None:
            raise _unauthorized(
                "send an API key: Authorization: Bearer <key>"
                if authorization is None
                else "the Authorization header must be 'Bearer <key>'"
            )
        key = self.ring.authenticate(token)
        if key is None:
            raise _unauthorized("the API key is not valid (unknown, mistyped or revoked)")
        return key

    @staticmethod
    def authorise(key: ApiKey | None, request_type: str) -> None:
        """403 unless ``key`` (``None``: the gateway is open) may send ``request_type``."""
        if key is None or key.may_send(request_type):
            return
        allowed = ", ".join(sorted(key.request_types)) or "none"
        raise ErrorAnswer(
            403,
            "forbidden",
            f"the API key {key.name!r} may not send {request_type!r} requests; it may send: "
            f"{allowed}",
            [{"field": "type", "message": "not allowed for this key"}],
        )


def _unauthorized(message: str) -> ErrorAnswer:
    return ErrorAnswer(401, "unauthorized", message, headers={"WWW-Authenticate": _CHALLENGE})


class KeyRefresher:
    """Keeps an :class:`Authorizer`'s keys current: read at start, then every ``refresh_s``."""

    def __init__(
        self, authorizer: Authorizer, load: KeyLoader, *, refresh_s: float = DEFAULT_REFRESH_S
    ) -> None:
        if not refresh_s > 0:
            raise ValueError(f"refresh_s must be > 0, got {refresh_s!r}")
        self.authorizer = authorizer
        self._load = load
        self.refresh_s = refresh_s

    def refresh(self, keys: Sequence[ApiKey]) -> None:
        """Use ``keys`` from now on; a warning whenever the gateway becomes open."""
        was_open = self.authorizer.ring.open
        ring = KeyRing(keys)
        self.authorizer.ring = ring
        if ring.open and not was_open:
            log.warning(_OPEN_WARNING)
        elif was_open and not ring.open:
            log.info("API keys exist now: every request needs one (Authorization: Bearer <key>)")

    async def first(self) -> None:
        """The first read, at start: its failure stops the gateway (it cannot know who may
        send), and an open gateway says so (one WARNING line)."""
        try:
            keys = await asyncio.to_thread(self._load)
        except Exception as error:
            raise PipelineError(f"cannot read the API keys: {_first_line(error)}") from None
        self.authorizer.ring = KeyRing(keys)
        if self.authorizer.open:
            log.warning(_OPEN_WARNING)
        else:
            ring = self.authorizer.ring
            log.info(
                "%d API keys loaded (%d revoked); every request needs one", len(ring), ring.revoked
            )

    async def run(self) -> None:
        """Read the keys again every ``refresh_s`` until cancelled; a failed read keeps the
        keys known so far (warned once per failure streak)."""
        failing = False
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                keys = await asyncio.to_thread(self._load)
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

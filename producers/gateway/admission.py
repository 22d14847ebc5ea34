"""Step 1 of a request: its credentials, who sends it, and whether its token bucket lets it in.

1. where credentials are needed (see :mod:`producers.gateway.auth`), one ``Authorization``
   header: 401 without a valid key or token, 400 ``invalid_header`` when it is repeated;
2. the client: the key's name (a token's ``jwt:<sub>``); in an open gateway the peer address,
   or ``X-Client-Id`` from a trusted proxy (see :mod:`producers.gateway.identity`);
3. a token from the client's bucket, else 429 ``rate_limited`` with ``Retry-After``.

A request without valid credentials (missing, invalid or repeated) takes a token from its
address's bucket (the address as an open gateway names its clients), kept apart from the
keys' buckets (a key may be named like an address): once it is empty, such requests are 429,
not 401, so a flood of bad credentials from one address is limited like any other; a valid
key still has its own bucket.

No I/O: the gateway calls it from its event loop only.
"""

from __future__ import annotations

from dataclasses import dataclass

from multidict import MultiMapping

from pipeline.settings import GatewaySettings
from producers.gateway.answers import ErrorAnswer
from producers.gateway.auth import Authorizer, Client
from producers.gateway.identity import TrustedProxies
from producers.gateway.intake import header_id, single_header
from producers.gateway.rate_limit import Clock, RateDecision, TokenBucketLimiter

__all__ = ["Admission", "Admitted"]


@dataclass(frozen=True)
class Admitted:
    """A request let in: its key or token (``None`` in an open gateway) and its client."""

    credential: Client | None
    client: str


class Admission:
    """The decisions of step 1, over ``authorizer`` (whose keys are refreshed in place)."""

    def __init__(
        self,
        authorizer: Authorizer,
        settings: GatewaySettings,
        *,
        clock: Clock,
    ) -> None:
        self.authorizer = authorizer
        self.settings = settings
        self.trusted_proxies = TrustedProxies(settings.trusted_proxies)
        self.limiter = TokenBucketLimiter(settings.rate_per_s, settings.burst, clock=clock)
        #: The buckets of requests without valid credentials, by address.
        self.uncredentialed = TokenBucketLimiter(settings.rate_per_s, settings.burst, clock=clock)

    def authenticate(self, headers: MultiMapping[str], peer: str | None) -> Client | None:
        """The request's key or token (``None``: an open gateway), or 400/401; 429 instead
        once its address has sent too many requests without valid credentials."""
        if self.authorizer.open:  # Authorization is not read
            return None
        try:
            return self.authorizer.authenticate(single_header(headers, "Authorization"))
        except ErrorAnswer as refused:
            if refused.status < 500:  # not a 503 keys_unavailable: those may be valid
                self._take_for_address(
                    self.uncredentialed, headers, peer, "without valid credentials from"
                )
            raise

    def admit(self, headers: MultiMapping[str], peer: str | None) -> Admitted:
        """:meth:`authenticate`, then a token from the client's bucket, or 429."""
        credential = self.authenticate(headers, peer)
        if credential is None:
            client = self._take_for_address(self.limiter, headers, peer, "from client")
        else:
            client = credential.name
            self._take(self.limiter, client, f"from client {client!r}")
        return Admitted(credential, client)

    def _take_for_address(
        self, limiter: TokenBucketLimiter, headers: MultiMapping[str], peer: str | None, whose: str
    ) -> str:
        """A token from ``limiter``'s bucket of the request's :meth:`address`, which it returns;
        429 when that is empty. A trusted proxy's ``X-Client-Id`` that does not read is its
        400, after a token of the proxy's own bucket (a 400 every time was never limited)."""
        try:
            address = self.address(headers, peer)
        except ErrorAnswer:
            own = self.trusted_proxies.client(peer, None)
            self._take(limiter, own, f"{whose} {own!r}")
            raise
        self._take(limiter, address, f"{whose} {address!r}")
        return address

    def address(self, headers: MultiMapping[str], peer: str | None) -> str:
        """The peer address, or the ``X-Client-Id`` a trusted proxy gives (400 if invalid or
        repeated); another peer's ``X-Client-Id`` is not read."""
        claimed = None
        if peer in self.trusted_proxies:
            claimed = header_id("X-Client-Id", single_header(headers, "X-Client-Id"))
        return self.trusted_proxies.client(peer, claimed)

    def _take(self, limiter: TokenBucketLimiter, bucket: str, whose: str) -> None:
        decision = limiter.acquire(bucket)
        if not decision.allowed:
            raise self._rate_limited(decision, whose)

    def _rate_limited(self, decision: RateDecision, whose: str) -> ErrorAnswer:
        retry_after = decision.retry_after_header
        return ErrorAnswer(
            429,
            "rate_limited",
            f"too many requests {whose} (at most {self.settings.rate_per_s:g}/s, bursts of "
            f"{self.settings.burst}); retry after {retry_after} s",
            headers={"Retry-After": retry_after},
        )

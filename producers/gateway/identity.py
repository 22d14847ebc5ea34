"""Who a request comes from, for its rate limit and its Idempotency-Key scope.

A client may put anything in a header, so a header alone never names it:

1. a request from a *trusted proxy* (``GatewaySettings.trusted_proxies``: addresses or CIDR
   networks) that carries ``X-Client-Id`` is that client; the proxy must set the header itself,
   overwriting whatever its client sent;
2. any other request is its peer address, and its ``X-Client-Id`` is ignored: changing the header
   gets no fresh token bucket, and cannot churn other clients' buckets out of the limiter;
3. a peer that is not an IP address (a Unix socket) is never trusted.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["TrustedProxies"]

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrustedProxies:
    """The peers whose ``X-Client-Id`` header is believed."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self._networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, peer: object) -> bool:
        address = _address(peer)
        return address is not None and any(address in network for network in self._networks)

    def client(self, peer: str | None, client_id: str | None) -> str:
        """The client's identity: ``client_id`` when ``peer`` is trusted, else ``peer``."""
        if client_id is not None and peer in self:
            return client_id
        return peer or "unknown"


def _address(peer: object) -> _Address | None:
    if not isinstance(peer, str):
        return None
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:10.0.0.1 on a dual-stack socket is 10.0.0.1
    return address

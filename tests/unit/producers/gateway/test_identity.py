"""Client identity: X-Client-Id names the client only when a trusted proxy sent it."""

from __future__ import annotations

import pytest

from producers.gateway.identity import TrustedProxies


def test_with_no_trusted_proxies_the_client_is_its_address_whatever_header_it_sends():
    proxies = TrustedProxies()

    assert proxies.client("203.0.113.7", "someone-else") == "203.0.113.7"
    assert proxies.client("203.0.113.7", None) == "203.0.113.7"


def test_a_trusted_proxy_names_its_client_with_x_client_id():
    proxies = TrustedProxies(["10.0.0.0/8", "192.0.2.1"])

    assert proxies.client("10.1.2.3", "customer-42") == "customer-42"
    assert proxies.client("192.0.2.1", "customer-43") == "customer-43"


def test_a_trusted_proxy_without_x_client_id_is_its_own_client():
    assert TrustedProxies(["10.0.0.0/8"]).client("10.1.2.3", None) == "10.1.2.3"


def test_a_peer_outside_the_trusted_networks_is_its_address():
    proxies = TrustedProxies(["10.0.0.0/8", "192.0.2.1"])

    assert proxies.client("11.0.0.1", "customer-42") == "11.0.0.1"
    assert proxies.client("192.0.2.2", "customer-42") == "192.0.2.2"


@pytest.mark.parametrize(
    ("trusted", "peer"),
    [
        (["10.0.0.0/8"], "::ffff:10.0.0.1"),  # IPv4-mapped, as a dual-stack socket reports it
        (["fd00::/8"], "fd00::1"),
        (["fe80::/10"], "fe80::1%eth0"),  # with a zone id
    ],
)
def test_ipv6_peers_are_matched_by_address(trusted, peer):
    assert peer in TrustedProxies(trusted)


@pytest.mark.parametrize("peer", [None, "", "/run/gateway.sock", "not-an-address"])
def test_a_peer_that_is_not_an_ip_address_is_never_trusted(peer):
    proxies = TrustedProxies(["0.0.0.0/0", "::/0"])

    assert peer not in proxies
    assert proxies.client(peer, "customer-42") == (peer or "unknown")


def test_an_ipv4_peer_does_not_match_an_ipv6_network():
    assert "10.0.0.1" not in TrustedProxies(["::/0"])

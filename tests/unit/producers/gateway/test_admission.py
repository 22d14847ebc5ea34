"""Step 1 of a request: its credentials, its client and its token bucket. A request without
valid credentials (missing, invalid, or ``Authorization`` repeated) takes a token from its
address's bucket, so a flood of them is 429 once that is empty; a valid key keeps its own."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from pipeline.settings import GatewaySettings
from producers.gateway.admission import Admission
from producers.gateway.answers import ErrorAnswer
from producers.gateway.auth import Authorizer
from producers.gateway.keys import ApiKey, KeyRing
from tests.support.api_keys import shop_key

MADE, SHOP = shop_key()
PEER = "192.0.2.7"
SETTINGS = GatewaySettings(rate_per_s=1, burst=3)


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def admission(*keys: ApiKey, settings: GatewaySettings = SETTINGS) -> Admission:
    return Admission(Authorizer(KeyRing(keys)), settings, clock=lambda: 0.0)


def refusal(
    admit: Admission, request_headers: CIMultiDictProxy[str], peer: str = PEER
) -> ErrorAnswer:
    with pytest.raises(ErrorAnswer) as refused:
        admit.admit(request_headers, peer)
    return refused.value


BAD_CREDENTIALS = [
    pytest.param(headers(), id="none"),
    pytest.param(headers(("Authorization", "Bearer pgk_nope")), id="invalid key"),
    pytest.param(headers(("Authorization", "Basic dXNlcjpwdw==")), id="not bearer"),
]


@pytest.mark.parametrize("request_headers", BAD_CREDENTIALS)
def test_requests_without_valid_credentials_are_401_until_the_address_bucket_is_empty_then_429(
    request_headers,
):
    gate = admission(SHOP)

    answers = [refusal(gate, request_headers) for _ in range(5)]

    assert [answer.status for answer in answers] == [401, 401, 401, 429, 429]
    limited = answers[3]
    assert limited.code == "rate_limited"
    assert limited.headers["Retry-After"] == "1"
    assert limited.message == (
        f"too many requests without valid credentials from {PEER!r} (at most 1/s, bursts of 3); "
        "retry after 1 s"
    )


def test_a_valid_key_keeps_its_own_bucket_beside_its_address_flood_of_bad_ones():
    gate = admission(SHOP)
    for _ in range(4):  # the address's bucket is empty: 401, 401, 401, 429
        refusal(gate, headers(("Authorization", "Bearer pgk_nope")))

    admitted = [
        gate.admit(headers(("Authorization", f"Bearer {MADE.key}")), PEER) for _ in range(3)
    ]

    assert [(a.credential, a.client) for a in admitted] == [(SHOP, "shop")] * 3
    assert refusal(gate, headers(("Authorization", f"Bearer {MADE.key}"))).status == 429
    # ... and other addresses have buckets of their own
    assert refusal(gate, headers(), peer="192.0.2.8").status == 401


def test_a_key_named_like_an_address_shares_no_bucket_with_that_address():
    named_like_the_peer = ApiKey(
        name=PEER,
        key_id=SHOP.key_id,
        secret_sha256=SHOP.secret_sha256,
        request_types=SHOP.request_types,
        created_at=SHOP.created_at,
    )
    gate = admission(named_like_the_peer)
    for _ in range(4):
        refusal(gate, headers())

    assert gate.admit(headers(("Authorization", f"Bearer {MADE.key}")), PEER).client == PEER


def test_a_repeated_authorization_is_400_and_counts_as_no_valid_credentials():
    gate = admission(SHOP)
    twice = headers(("Authorization", f"Bearer {MADE.key}"), ("Authorization", "Bearer pgk_nope"))

    answers = [refusal(gate, twice) for _ in range(4)]

    assert [(a.status, a.code) for a in answers] == [(400, "invalid_header")] * 3 + [
        (429, "rate_limited")
    ]
    assert answers[0].message == "Authorization given 2 times: send it once"
    assert answers[0].details == [{"field": "Authorization", "message": "repeated"}]
    assert MADE.key not in answers[0].body().decode()


def test_an_open_gateway_reads_no_authorization_and_limits_by_address():
    gate = admission()
    twice = headers(("Authorization", "Bearer a"), ("Authorization", "Bearer b"))

    assert [gate.admit(twice, PEER).client for _ in range(3)] == [PEER] * 3
    assert refusal(gate, twice).status == 429


def test_bad_credentials_through_a_trusted_proxy_count_against_its_x_client_id():
    gate = admission(SHOP, settings=SETTINGS.model_copy(update={"trusted_proxies": [PEER]}))
    for _ in range(3):
        assert refusal(gate, headers(("X-Client-Id", "customer-1"))).status == 401

    assert refusal(gate, headers(("X-Client-Id", "customer-1"))).status == 429
    assert refusal(gate, headers(("X-Client-Id", "customer-2"))).status == 401
    repeated = refusal(gate, headers(("X-Client-Id", "a"), ("X-Client-Id", "b")))
    assert (repeated.status, repeated.message) == (400, "X-Client-Id given 2 times: send it once")


def test_an_untrusted_peer_changing_x_client_id_gets_no_fresh_bucket_for_bad_credentials():
    gate = admission(SHOP)

    statuses = [refusal(gate, headers(("X-Client-Id", f"c-{n}"))).status for n in range(4)]

    assert statuses == [401, 401, 401, 429]


@pytest.mark.parametrize("open_gateway", [False, True], ids=["bad credentials", "open gateway"])
def test_a_trusted_proxys_x_client_id_that_does_not_read_is_limited_as_the_proxy(open_gateway):
    # A repeated or bad X-Client-Id from a trusted proxy was 400 every time, never a token
    # taken from any bucket: never a 429.
    keys = () if open_gateway else (SHOP,)
    gate = admission(*keys, settings=SETTINGS.model_copy(update={"trusted_proxies": [PEER]}))
    repeated = headers(("X-Client-Id", "a"), ("X-Client-Id", "a"))

    statuses = [refusal(gate, repeated).status for _ in range(5)]

    assert statuses == [400, 400, 400, 429, 429]

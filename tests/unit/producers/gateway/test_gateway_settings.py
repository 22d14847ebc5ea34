"""GatewaySettings: trusted proxies, a produce timeout coherent with the producer's, JWT."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.settings import (
    GatewaySettings,
    JwtSettings,
    PipelineSettings,
    ProducerSettings,
    gateway_timeout_problem,
)

pytestmark = pytest.mark.usefixtures("clean_pipeline_environment")


def test_by_default_no_proxy_is_trusted():
    assert GatewaySettings().trusted_proxies == []


def test_trusted_proxies_are_addresses_or_networks_from_a_json_environment_list(monkeypatch):
    monkeypatch.setenv("PIPELINE_GATEWAY__TRUSTED_PROXIES", '["10.1.2.3/8", "192.0.2.1", "::1"]')

    settings = PipelineSettings()

    assert settings.gateway.trusted_proxies == ["10.0.0.0/8", "192.0.2.1/32", "::1/128"]


def test_a_trusted_proxy_that_is_no_address_is_refused():
    with pytest.raises(ValidationError, match="expected IP addresses or CIDR networks"):
        GatewaySettings(trusted_proxies=["proxy.internal"])


def test_by_default_the_gateway_answers_well_before_librdkafka_gives_up():
    settings = PipelineSettings()

    assert settings.gateway.produce_timeout_s < settings.producer.delivery_timeout_ms / 1000


def test_a_produce_timeout_longer_than_the_delivery_timeout_is_the_gateways_problem():
    producer = ProducerSettings(delivery_timeout_ms=120_000)
    gateway = GatewaySettings(produce_timeout_s=30_000)  # milliseconds, by mistake

    problem = gateway_timeout_problem(producer, gateway)

    assert problem is not None
    assert problem.startswith(
        "PIPELINE_GATEWAY__PRODUCE_TIMEOUT_S (30000 s) must not exceed "
        "PIPELINE_PRODUCER__DELIVERY_TIMEOUT_MS (120,000 ms, 120 s)"
    )


def test_a_short_delivery_timeout_is_no_problem_for_the_other_programs():
    # pipeline produce with PIPELINE_PRODUCER__DELIVERY_TIMEOUT_MS=8000 was refused over the
    # gateway's setting, which it never uses.
    settings = PipelineSettings(producer=ProducerSettings(delivery_timeout_ms=8_000))

    assert gateway_timeout_problem(settings.producer, settings.gateway) is not None
    assert settings.producer.delivery_timeout_ms == 8_000


def test_a_produce_timeout_equal_to_the_delivery_timeout_is_accepted():
    producer = ProducerSettings(delivery_timeout_ms=10_000)

    assert gateway_timeout_problem(producer, GatewaySettings(produce_timeout_s=10)) is None


JWT = {"issuer": "https://id.example.com/", "audience": "pipeline-gateway"}


def test_no_jwt_is_accepted_unless_configured():
    assert GatewaySettings().jwt is None


def test_jwt_settings_come_from_the_environment_and_the_secret_is_never_shown(monkeypatch):
    secret = "a-shared-secret-of-at-least-32-bytes"
    monkeypatch.setenv("PIPELINE_GATEWAY__JWT__ISSUER", JWT["issuer"])
    monkeypatch.setenv("PIPELINE_GATEWAY__JWT__AUDIENCE", JWT["audience"])
    monkeypatch.setenv("PIPELINE_GATEWAY__JWT__ALGORITHMS", '["HS256"]')
    monkeypatch.setenv("PIPELINE_GATEWAY__JWT__SECRET", secret)

    settings = PipelineSettings()

    jwt = settings.gateway.jwt
    assert jwt is not None and jwt.algorithms == ["HS256"] and jwt.leeway_s == 30
    assert jwt.secret is not None and jwt.secret.get_secret_value() == secret
    assert secret not in repr(settings) and secret not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("key", "algorithms", "problem"),
    [
        ({}, ["RS256"], "exactly one of secret, public_key_file or jwks_file"),
        (
            {"secret": "x" * 32, "jwks_file": "jwks.json"},
            ["HS256"],
            "exactly one of secret, public_key_file or jwks_file",
        ),
        ({"secret": "x" * 31}, ["HS256"], "at least 32 bytes"),
        # A public key pasted as the secret: the gateway started, then refused every token
        # as of an algorithm it does not accept.
        (
            {"secret": "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n"},
            ["HS256"],
            "the secret is a PEM or SSH key",
        ),
        (
            {"secret": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRVHrvhrvhrvhrvhrvh rvh@example"},
            ["HS256"],
            "the secret is a PEM or SSH key",
        ),
        (
            {"secret": "---- BEGIN SSH2 PUBLIC KEY ----\nAAAAB3NzaC1yc2EAAAADAQABAAABAQ\n"},
            ["HS256"],
            "the secret is a PEM or SSH key",
        ),
        ({"secret": "x" * 32}, ["HS256", "RS256"], "a secret signs HS256/HS384/HS512 tokens only"),
        ({"jwks_file": "jwks.json"}, ["ES256", "HS256"], "HS256 needs a secret"),
        ({"public_key_file": "key.pem"}, ["none"], "algorithms.0"),
        ({"public_key_file": "key.pem"}, [], "at least 1 item"),
    ],
)
def test_jwt_settings_need_one_key_that_fits_explicit_algorithms(key, algorithms, problem):
    with pytest.raises(ValidationError, match=problem) as refused:
        JwtSettings(**JWT, algorithms=algorithms, **key)

    assert "x" * 31 not in str(refused.value)

"""GatewaySettings: trusted proxies, and a produce timeout coherent with the producer's."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.settings import GatewaySettings, PipelineSettings, ProducerSettings

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


def test_a_produce_timeout_longer_than_the_delivery_timeout_is_refused():
    with pytest.raises(ValidationError, match=r"must not exceed producer\.delivery_timeout_ms"):
        PipelineSettings(
            gateway=GatewaySettings(produce_timeout_s=30_000),  # milliseconds, by mistake
            producer=ProducerSettings(delivery_timeout_ms=120_000),
        )


def test_a_produce_timeout_equal_to_the_delivery_timeout_is_accepted():
    settings = PipelineSettings(
        gateway=GatewaySettings(produce_timeout_s=10),
        producer=ProducerSettings(delivery_timeout_ms=10_000),
    )

    assert settings.gateway.produce_timeout_s == 10

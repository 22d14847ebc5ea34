"""librdkafka's refusal of a client's config is one line (its text ends with a line break,
which made the error two lines, and a JSON log record hold one), naming the PIPELINE_* settings
that set the properties it names, else pointing at the Kafka settings."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.errors import PipelineError
from pipeline.kafka.clients import build_consumer, build_producer
from pipeline.settings import KafkaSettings

KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1")


def refusal(build: Any, **config: Any) -> str:
    with pytest.raises(PipelineError) as refused:
        build(KAFKA, **config)
    return str(refused.value)


def test_a_value_out_of_librdkafkas_range_is_one_line_naming_the_setting() -> None:
    said = refusal(build_producer, **{"linger.ms": 999_999_999})
    assert said == (
        "cannot set up a Kafka client with these settings: Configuration property "
        '"queue.buffering.max.ms" value 1e+09 is outside allowed range 0..900000 '
        "(see PIPELINE_PRODUCER__LINGER_MS)"
    )


@pytest.mark.parametrize(
    ("config", "setting"),
    [
        ({"statistics.interval.ms": 999_999_999}, "PIPELINE_PRODUCER__STATISTICS_INTERVAL_MS"),
        ({"compression.type": "brotli"}, "PIPELINE_PRODUCER__COMPRESSION"),
        (
            {"delivery.timeout.ms": 2**31},
            "PIPELINE_PRODUCER__DELIVERY_TIMEOUT_MS or PIPELINE_LOGS__DELIVERY_TIMEOUT_MS",
        ),
        ({"queue.buffering.max.messages": 2**31}, "PIPELINE_LOGS__BUFFER_SIZE"),
    ],
)
def test_each_producer_setting_librdkafka_refuses_is_named(
    config: dict[str, Any], setting: str
) -> None:
    said = refusal(build_producer, **config)
    assert "\n" not in said
    assert said.endswith(f" (see {setting})"), said


def test_a_refusal_of_two_properties_names_the_settings_of_both() -> None:
    said = refusal(build_producer, **{"linger.ms": 1_000, "delivery.timeout.ms": 1_000})
    assert "\n" not in said
    assert said.endswith(
        "(see PIPELINE_PRODUCER__DELIVERY_TIMEOUT_MS or PIPELINE_LOGS__DELIVERY_TIMEOUT_MS or "
        "PIPELINE_PRODUCER__LINGER_MS)"
    ), said


def test_a_consumer_setting_librdkafka_refuses_is_named() -> None:
    with pytest.raises(PipelineError) as refused:
        build_consumer(KAFKA, "g", **{"session.timeout.ms": 3_600_001})
    said = str(refused.value)
    assert "\n" not in said
    assert said.endswith("(see PIPELINE_LOGS__SHIPPER_SESSION_TIMEOUT_MS)"), said


def test_a_property_no_setting_sets_gets_the_general_hint_on_one_line() -> None:
    said = refusal(build_producer, **{"socket.timeout.ms": 1})
    assert "\n" not in said
    assert said.startswith("cannot set up a Kafka client with these settings: Configuration ")
    assert said.endswith("(see the PIPELINE_KAFKA__* settings)"), said


def test_a_property_librdkafka_names_without_quotes_is_named_too(tmp_path: Any) -> None:
    # An outside re-check: "Failed to create admin client: ssl.ca.location failed: ... (see
    # the PIPELINE_KAFKA__* settings)": the property was named, bare, and no setting said.
    not_a_certificate = tmp_path / "ca.pem"
    not_a_certificate.write_text("not a certificate\n")
    said = refusal(
        build_producer,
        **{"security.protocol": "SSL", "ssl.ca.location": str(not_a_certificate)},
    )
    assert "ssl.ca.location" in said
    assert said.endswith("(see PIPELINE_KAFKA__SSL_CA_LOCATION)"), said

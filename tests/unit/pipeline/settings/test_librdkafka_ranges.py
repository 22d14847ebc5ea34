"""The settings that become librdkafka properties take librdkafka's ranges: a value it would
refuse is an invalid setting at the start (one line naming it), not librdkafka's two-line error
naming its own property when a client is built. Each bound is checked against librdkafka
itself: the largest value builds a client, one more does not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from pydantic import ValidationError

from pipeline.cli.main import read_settings
from pipeline.errors import PipelineError
from pipeline.settings import LogSettings, ProducerSettings
from pipeline.settings.programs import LOG_LINGER_MS

ADDRESS = {"bootstrap.servers": "127.0.0.1:1"}


def producer(**config: Any) -> None:
    Producer({**ADDRESS, **config})


def consumer(**config: Any) -> None:
    Consumer({**ADDRESS, "group.id": "g", **config})


#: (settings section, field, its largest value, the client it goes to, librdkafka's property).
BOUNDS: list[tuple[type[Any], str, int, Callable[..., None], str]] = [
    (ProducerSettings, "linger_ms", 900_000, producer, "linger.ms"),
    (ProducerSettings, "statistics_interval_ms", 86_400_000, producer, "statistics.interval.ms"),
    (ProducerSettings, "delivery_timeout_ms", 2**31 - 1, producer, "delivery.timeout.ms"),
    (LogSettings, "delivery_timeout_ms", 2**31 - 1, producer, "delivery.timeout.ms"),
    (LogSettings, "buffer_size", 2**31 - 1, producer, "queue.buffering.max.messages"),
    (LogSettings, "shipper_session_timeout_ms", 300_000, consumer, "session.timeout.ms"),
]
IDS = [f"{section.__name__}.{field}" for section, field, *_ in BOUNDS]

#: The longest linger needs a longer delivery timeout (checked below), in the settings and in
#: the producer's config alike (every producer of ours sets its delivery timeout).
WITH = {"linger_ms": ({"delivery_timeout_ms": 900_001}, {"delivery.timeout.ms": 900_001})}


@pytest.mark.parametrize(("section", "field", "most", "client", "key"), BOUNDS, ids=IDS)
def test_the_largest_value_librdkafka_takes_is_a_valid_setting(
    section: type[Any], field: str, most: int, client: Callable[..., None], key: str
) -> None:
    settings, config = WITH.get(field, ({}, {}))
    assert getattr(section(**{field: most, **settings}), field) == most
    client(**{key: most, **config})  # librdkafka builds the client


@pytest.mark.parametrize(("section", "field", "most", "client", "key"), BOUNDS, ids=IDS)
def test_one_more_is_an_invalid_setting_as_librdkafka_refuses_it(
    section: type[Any], field: str, most: int, client: Callable[..., None], key: str
) -> None:
    with pytest.raises(KafkaException):
        client(**{key: most + 1})
    with pytest.raises(ValidationError) as refused:
        section(**{field: most + 1})
    (error,) = refused.value.errors()
    assert error["loc"] == (field,)
    assert error["msg"] == f"Input should be less than or equal to {most}"


def test_a_fractional_linger_past_the_range_is_refused_too() -> None:
    with pytest.raises(KafkaException):
        producer(**{"linger.ms": 900_000.5})
    with pytest.raises(ValidationError, match="linger_ms"):
        ProducerSettings(linger_ms=900_000.5)


def test_a_delivery_timeout_within_the_linger_is_refused_as_librdkafka_refuses_it() -> None:
    with pytest.raises(KafkaException, match=r"must be greater than `linger\.ms`"):
        producer(**{"linger.ms": 1_000, "delivery.timeout.ms": 1_000})
    with pytest.raises(ValidationError) as refused:
        ProducerSettings(linger_ms=1_000, delivery_timeout_ms=1_000)
    assert (
        "producer.delivery_timeout_ms (1,000 ms) must be more than producer.linger_ms (1,000 ms)"
        in str(refused.value)
    )
    assert ProducerSettings(linger_ms=1_000, delivery_timeout_ms=1_001).delivery_timeout_ms == 1_001


def test_the_log_producers_delivery_timeout_must_exceed_its_fixed_linger() -> None:
    # librdkafka refuses a delivery timeout within the log producer's linger (it was a client
    # error naming PIPELINE_PRODUCER__LINGER_MS, which plays no part there).
    with pytest.raises(KafkaException, match=r"must be greater than `linger\.ms`"):
        producer(**{"linger.ms": LOG_LINGER_MS, "delivery.timeout.ms": LOG_LINGER_MS})
    with pytest.raises(ValidationError, match=f"greater than {LOG_LINGER_MS}"):
        LogSettings(delivery_timeout_ms=LOG_LINGER_MS)
    assert LogSettings(delivery_timeout_ms=LOG_LINGER_MS + 1).delivery_timeout_ms == 51
    producer(**{"linger.ms": LOG_LINGER_MS, "delivery.timeout.ms": LOG_LINGER_MS + 1})


@pytest.mark.parametrize(
    ("variable", "said"),
    [
        (
            "PIPELINE_PRODUCER__LINGER_MS",
            "invalid setting producer.linger_ms: Input should be less than or equal to 900000",
        ),
        (
            "PIPELINE_PRODUCER__STATISTICS_INTERVAL_MS",
            "invalid setting producer.statistics_interval_ms: Input should be less than or "
            "equal to 86400000",
        ),
    ],
)
@pytest.mark.usefixtures("clean_pipeline_environment")
def test_the_reviewers_values_are_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, said: str
) -> None:
    monkeypatch.setenv(variable, "999999999")
    with pytest.raises(PipelineError) as refused:
        read_settings()
    assert str(refused.value) == said

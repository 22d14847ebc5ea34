"""``pipeline consume``'s error policy, without a broker: what ends the read and what waits."""

from __future__ import annotations

import io

import pytest
from confluent_kafka import KafkaError

from pipeline.cli import consume
from pipeline.errors import PipelineError

TOPIC = "rvcli.invoices"


class _ErrorMessage:
    """What ``Consumer.consume()`` gives for a consumer error (JoinGroup failed, say)."""

    def __init__(self, error: KafkaError) -> None:
        self._error = error

    def error(self) -> KafkaError:
        return self._error

    def partition(self) -> int | None:
        return None

    def offset(self) -> int | None:
        return None


class _FakeConsumer:
    """Gives the same error at every poll, as librdkafka does while it retries the join."""

    def __init__(self, error: KafkaError, polls: int = 50) -> None:
        self.error = error
        self.polls = polls

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[_ErrorMessage]:
        self.polls -= 1
        if self.polls < 0:
            raise AssertionError("the read never ends")
        return [_ErrorMessage(self.error)]


def _reading(*, group: str | None, follow: bool) -> consume._Reading:
    reading = consume._Reading(TOPIC, {0: 5, 1: 5}, follow)
    reading.group = group
    return reading


@pytest.mark.parametrize("follow", [False, True], ids=["to-the-end", "follow"])
def test_a_group_in_use_with_another_protocol_ends_the_read_with_one_error(follow):
    # `pipeline consume T --group G` while G is a running processor's group (Faust's assignor):
    # librdkafka retries the JoinGroup for ever; it used to warn once and then wait for ever.
    error = KafkaError(
        KafkaError.INCONSISTENT_GROUP_PROTOCOL,
        "JoinGroup failed: Broker: Inconsistent group protocol",
    )
    consumer = _FakeConsumer(error)

    with pytest.raises(PipelineError) as raised:
        consume._read(
            consumer,  # type: ignore[arg-type]
            _reading(group="rvcli-recorder", follow=follow),
            io.BytesIO(),
            None,
            commit=True,
        )

    said = str(raised.value)
    assert "\n" not in said
    assert "group rvcli-recorder" in said
    assert "another assignment protocol" in said and "a running processor" in said
    assert "use another --group, or none" in said


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (KafkaError.INVALID_GROUP_ID, "refuses it as a group id"),
        (KafkaError.INVALID_SESSION_TIMEOUT, "session.timeout.ms"),
    ],
)
def test_other_join_errors_that_never_clear_end_the_read_too(code, words):
    error = KafkaError(code, "JoinGroup failed: Broker: something")

    with pytest.raises(PipelineError, match=words) as raised:
        consume._handle_error(_ErrorMessage(error), _reading(group="g-1", follow=False))

    assert "group g-1" in str(raised.value)


def test_an_error_librdkafka_recovers_from_is_a_warning_once_and_the_read_goes_on(capsys):
    reading = _reading(group="g-1", follow=False)
    error = KafkaError(KafkaError._TRANSPORT, "Connection refused")

    consume._handle_error(_ErrorMessage(error), reading)
    consume._handle_error(_ErrorMessage(error), reading)

    warned = capsys.readouterr().err
    assert warned.count("warning:") == 1 and "Connection refused" in warned

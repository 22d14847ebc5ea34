"""A stand-in for confluent-kafka's ``Producer`` (no broker): it records every produce call and
settles the deliveries at ``flush``, as scripted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException

from tests.support.produce_calls import ProduceCall


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


@dataclass(frozen=True)
class Produced:
    topic: str
    key: bytes
    value: bytes | None
    headers: list[tuple[str, bytes]]
    on_delivery: Callable[[KafkaError | None, FakeMessage], None] = field(repr=False)

    @property
    def event_id(self) -> str:
        return dict(self.headers)["ce_id"].decode()


@dataclass
class FakeMessage:
    produced: Produced
    offset_: int

    def topic(self):
        return self.produced.topic

    def key(self):
        return self.produced.key

    def headers(self):
        return self.produced.headers

    def partition(self):
        return 0

    def offset(self):
        return self.offset_


@dataclass
class FakeKafka:
    """``refuse``: event ids refused at once (as librdkafka refuses a message too large);
    ``fail``: event ids the broker does not acknowledge; ``too_large``: event ids the broker
    refuses as too large (``MSG_SIZE_TOO_LARGE``); ``unanswered_flushes``: how many
    flushes return with every event still pending; ``on_flush`` runs at each flush, before
    anything is settled."""

    refuse: set[str] = field(default_factory=set)
    fail: set[str] = field(default_factory=set)
    too_large: set[str] = field(default_factory=set)
    unanswered_flushes: int = 0
    on_flush: Callable[[], None] | None = None
    #: Every event queued, in produce order.
    produced: list[Produced] = field(default_factory=list)
    #: Every event acknowledged, in the order the broker acknowledged it.
    acknowledged: list[Produced] = field(default_factory=list)
    pending: list[Produced] = field(default_factory=list)
    flushes: int = 0

    def produce(self, *args, **kwargs):
        call = ProduceCall(*args, **kwargs)  # as EventProducer passes them: by position
        # As confluent-kafka does: a text key or header value goes out as its UTF-8 bytes.
        produced = Produced(
            call.topic,
            _as_bytes(call.key),
            call.value,
            [(name, _as_bytes(header)) for name, header in call.headers or []],
            call.report,
        )
        if produced.event_id in self.refuse:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.produced.append(produced)
        self.pending.append(produced)

    def __len__(self):
        return len(self.pending)

    def poll(self, timeout=0):
        return 0  # delivery reports are served by flush only

    def flush(self, timeout=0):
        self.flushes += 1
        if self.on_flush is not None:
            self.on_flush()
        if self.unanswered_flushes:
            self.unanswered_flushes -= 1
            return len(self.pending)
        settled, self.pending = self.pending, []
        for produced in settled:
            if produced.event_id in self.fail:
                error = KafkaError(KafkaError._MSG_TIMED_OUT)
                produced.on_delivery(error, FakeMessage(produced, -1))
            elif produced.event_id in self.too_large:
                error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
                produced.on_delivery(error, FakeMessage(produced, -1))
            else:
                self.acknowledged.append(produced)
                produced.on_delivery(None, FakeMessage(produced, len(self.acknowledged)))
        return 0

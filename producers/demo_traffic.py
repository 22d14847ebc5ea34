"""The demo's traffic: order requests for a handful of customers, produced through the envelope."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from confluent_kafka import KafkaError, Message, Producer

from pipeline.envelope import Event, encode
from pipeline.errors import PipelineError

SOURCE = "/pipeline/demo"
EVENT_TYPE = "com.example.orders.place_order.requested"


def demo_events(count: int, correlation_id: str, seed: int = 7) -> Iterator[Event]:
    """``count`` PlaceOrder requests over ``max(1, count // 10)`` orders, keyed by order id."""
    rng = random.Random(seed)
    orders = [f"order-{n:05d}" for n in range(max(1, count // 10))]
    for sequence in range(count):
        order_id = rng.choice(orders)
        yield Event(
            source=SOURCE,
            type=EVENT_TYPE,
            subject=order_id,
            partitionkey=order_id,
            correlationid=correlation_id,
            data={
                "order_id": order_id,
                "sequence": sequence,
                "customer_id": f"customer-{rng.randrange(50):03d}",
                "amount": str(Decimal(rng.randrange(100, 100_000)) / 100),
            },
        )


@dataclass
class ProduceReport:
    sent: int = 0
    failed: int = 0
    per_partition: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def produce_events(
    producer: Producer,
    topic: str,
    events: Iterator[Event],
    on_progress: Callable[[int], None] | None = None,
) -> ProduceReport:
    """Produce every event and wait until the broker acknowledged (or refused) each one."""
    report = ProduceReport()

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            report.failed += 1
            if len(report.errors) < 5:
                report.errors.append(str(error))
            return
        report.sent += 1
        report.per_partition[message.partition() or 0] += 1
        if on_progress is not None:
            on_progress(1)

    for event in events:
        message = encode(event)
        while True:
            try:
                producer.produce(
                    topic,
                    value=message.value,
                    key=message.key,
                    headers=[*message.headers],
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: serve deliveries, then try again
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining:
        raise PipelineError(f"{remaining} events were still unacknowledged after 60 s")
    return report

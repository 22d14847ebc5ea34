"""Writes tests/data/demo_orders.ndjson: a small recording of the demo's order requests.

Run it from the repository root (``.venv/bin/python tests/data/make_demo_recording.py``) after
changing the mix; tests/unit/pipeline/testing/test_demo_recording.py checks that the file is
what this script makes. The recording is in ``pipeline record``'s format, as if recorded from
``requests.orders`` (6 partitions, each message on its key's murmur2 partition), and every id
and time in it is fixed, so replays are repeatable.

The mix, for the settings in :data:`DEMO_ENV` (30 units per SKU, cards declined above 500.00,
no slow shipments, no flaky refunds), 60 orders:

- most complete: one line of 1 or 2 units, or two lines;
- ``n % 10 == 3``: 31 units of one SKU, more than it ever has: out of stock;
- ``n % 10 == 7``: 600.00 a unit: the card is declined;
- ten minutes after the orders, CancelOrders: for three approved orders (too late: refused and
  dead-lettered), for three rejected ones (they become cancelled), and for two orders that do
  not exist (dead-lettered).

Every order's outcome depends on that order alone: the SKUs' stock covers everything the other
orders could reserve at once, so the result does not depend on which saga runs first. The
cancellations are replayed once every saga ended (tests/e2e/test_demo_replay.py): a cancel that
races its order's saga has no single right outcome.
"""

from __future__ import annotations

import sys
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.envelope import Event, encode
from pipeline.kafka.partitioner import partition_for
from pipeline.replay.recording import RecordedMessage, format_line

OUT = Path(__file__).with_name("demo_orders.ndjson")
TOPIC = "requests.orders"
PARTITIONS = 6
ORDERS = 60
SKUS = 5
STOCK_PER_SKU = 30
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CANCELS_AFTER = timedelta(minutes=10)
#: The demo settings the recording's outcomes are pinned for (both backends use them).
DEMO_ENV = {
    "PIPELINE_DEMO__STOCK_PER_SKU": str(STOCK_PER_SKU),
    "PIPELINE_DEMO__DECLINE_ABOVE_CENTS": "50000",
    "PIPELINE_DEMO__SLOW_SHIPPING_SHARE": "0",
    "PIPELINE_DEMO__FLAKY_REFUND_SHARE": "0",
    "PIPELINE_DEMO__REFUND_FAILURES": "0",
}


def _id(n: int, moment: datetime) -> str:
    """A UUIDv7 for the ``n``-th message: its time, then ``n`` where the random bits go."""
    ms = int(moment.timestamp() * 1000)
    value = (ms << 80) | (0x7 << 76) | ((n & 0xFFF) << 64) | (0b10 << 62) | n
    return str(uuid.UUID(int=value))


def _line(sku: int, quantity: int, price: str) -> dict[str, Any]:
    return {"sku": f"replay-sku-{sku}", "quantity": quantity, "unit_price": price}


def requests() -> list[tuple[str, dict[str, Any]]]:
    """``(event type, data)`` of every request, in the order they were sent."""
    sent: list[tuple[str, dict[str, Any]]] = []
    for n in range(ORDERS):
        order_id = f"replay-o{n:02d}"
        sku, kind = n % SKUS, n % 10
        price = f"{10 + n}.00"
        if kind == 3:
            lines = [_line(sku, STOCK_PER_SKU + 1, price)]
        elif kind == 7:
            lines = [_line(sku, 1, "600.00")]
        elif kind == 9:
            lines = [_line(sku, 1, price), _line((sku + 2) % SKUS, 1, "5.00")]
        else:
            lines = [_line(sku, 2 if kind == 1 else 1, price)]
        place = {"order_id": order_id, "customer_id": f"replay-c{n % 7}", "lines": lines}
        sent.append(("com.example.requests.place_order", place))
    cancelled = [f"replay-o{n:02d}" for n in (5, 25, 45, 13, 33, 53)]
    for order_id in [*cancelled, "replay-ghost-1", "replay-ghost-2"]:
        cancel = {"order_id": order_id, "reason": "changed my mind"}
        sent.append(("com.example.requests.cancel_order", cancel))
    return sent


def _check_stock_suffices(sent: list[tuple[str, dict[str, Any]]]) -> None:
    wanted: Counter[str] = Counter()
    for _, data in sent:
        for line in data.get("lines", []):
            if line["quantity"] <= STOCK_PER_SKU:
                wanted[line["sku"]] += line["quantity"]
    short = {sku: units for sku, units in wanted.items() if units > STOCK_PER_SKU}
    if short:
        raise SystemExit(f"orders that should complete could run out of stock: {short}")


def recording() -> list[RecordedMessage]:
    sent = requests()
    _check_stock_suffices(sent)
    offsets: dict[int, int] = defaultdict(int)
    messages = []
    for n, (event_type, data) in enumerate(sent):
        later = CANCELS_AFTER if event_type.endswith("cancel_order") else timedelta(0)
        moment = START + later + timedelta(milliseconds=250 * n)
        event = Event(
            id=_id(n, moment),
            source="/demo/gateway",
            type=event_type,
            time=moment,
            partitionkey=data["order_id"],
            data=data,
        )
        message = encode(event)
        key = message.key or b""
        partition = partition_for(key, PARTITIONS)
        messages.append(
            RecordedMessage(
                topic=TOPIC,
                partition=partition,
                offset=offsets[partition],
                key=message.key,
                value=message.value,
                headers=tuple(message.headers),
                timestamp_ms=int(moment.timestamp() * 1000),
                timestamp_type="create",
            )
        )
        offsets[partition] += 1
    return messages


def text() -> str:
    return "".join(format_line(message) + "\n" for message in recording())


if __name__ == "__main__":
    OUT.write_text(text(), encoding="utf-8")
    print(f"wrote {OUT} ({len(recording())} messages)", file=sys.stderr)

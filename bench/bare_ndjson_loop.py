"""The bare loop ``pipeline produce`` is measured against: the least a program does for the result.

NDJSON lines to a topic with confluent-kafka alone, as a careful user would write it: parse each
line to find its key, a fresh UUID and timestamp per event, the same CloudEvents headers
(binary mode), the line itself as the value, each delivery counted in a callback. No checks,
no rejects file, no summary. Run by bench/producer_throughput.py as a process of its own:

    python bench/bare_ndjson_loop.py CONFIG_JSON TOPIC FILE KEY_FIELD

It prints how many events were acknowledged.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer


def main() -> None:
    config, topic, path, key_field = sys.argv[1:5]
    producer = Producer(json.loads(config))
    run_id = str(uuid.uuid4()).encode()
    delivered = 0

    def on_delivery(error: Any, _message: Any) -> None:
        nonlocal delivered
        if error is None:
            delivered += 1

    with open(path, "rb") as lines:
        for line in lines:
            value = line.rstrip(b"\r\n")
            key = str(json.loads(value)[key_field]).encode()
            headers: list[tuple[str, str | bytes | None]] = [
                ("ce_id", str(uuid.uuid4()).encode()),
                ("ce_source", b"/pipeline/cli"),
                ("ce_type", b"com.example.event"),
                ("ce_specversion", b"1.0"),
                ("ce_time", datetime.now(UTC).isoformat().encode()),
                ("ce_partitionkey", key),
                ("ce_correlationid", run_id),
                ("content-type", b"application/json"),
            ]
            while True:
                try:
                    producer.produce(
                        topic, value=value, key=key, headers=headers, on_delivery=on_delivery
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
    producer.flush(120)
    print(delivered)


if __name__ == "__main__":
    main()

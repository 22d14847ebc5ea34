"""The bare loop ``pipeline produce`` is measured against: the least a program does for the result.

NDJSON lines to a topic with confluent-kafka alone, as a careful user would write it, with the
tools ``pipeline produce`` uses for the same work: each line parsed with msgspec (its JSON
parser, in C) to find its key and written back compact (no spaces: the bytes ``pipeline
produce`` sends as the value, about 9% fewer than the line as read here); a fresh UUID and
timestamp per event, in the same text form (``...T12:00:00.000000Z``), the same CloudEvents
headers (binary mode); each delivery counted in a callback; and Python's garbage collector set
as ``pipeline produce`` sets it while it sends (pipeline/gc_tuning.py ``few_collections``: the
objects made before the loop frozen out of its scans, its first threshold 50,000 allocations).
No checks of the line beyond finding its key, no rejects file, no summary. Run by
bench/producer_throughput.py as a process of its own:

    python bench/bare_ndjson_loop.py CONFIG_JSON TOPIC FILE KEY_FIELD

It prints how many events were acknowledged.
"""

from __future__ import annotations

import gc
import json
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from confluent_kafka import Producer

#: The collector's first threshold while sending: pipeline.gc_tuning.THRESHOLD_WHILE_SENDING,
#: what ``pipeline produce`` runs with (written here: the loop uses no code of ours).
GC_THRESHOLD = 50_000


def main() -> None:
    config, topic, path, key_field = sys.argv[1:5]
    producer = Producer(json.loads(config))
    run_id = str(uuid.uuid4()).encode()
    decode = msgspec.json.Decoder().decode
    encode = msgspec.json.Encoder().encode
    delivered = 0

    def on_delivery(error: Any, _message: Any) -> None:
        nonlocal delivered
        if error is None:
            delivered += 1

    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    with open(path, "rb") as lines:
        for line in lines:
            data = decode(line)
            key = str(data[key_field]).encode()
            value = encode(data)
            stamp = datetime.now(UTC).isoformat(timespec="microseconds")
            headers: list[tuple[str, str | bytes | None]] = [
                ("ce_id", str(uuid.uuid4()).encode()),
                ("ce_source", b"/pipeline/cli"),
                ("ce_type", b"com.example.event"),
                ("ce_specversion", b"1.0"),
                ("ce_time", stamp.removesuffix("+00:00").encode() + b"Z"),
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

"""The size librdkafka holds a message to when it is produced, against ``message.max.bytes``.

Our producers keep librdkafka's default, :data:`MAX_MESSAGE_BYTES`: a larger message is refused
by the client at once, whatever the topic's own ``max.message.bytes``. Knowing the size first
lets ``pipeline produce`` reject such a line and ``pipeline replay`` refuse it before anything
is sent. Written by hand: the client offers no way to ask.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MAX_MESSAGE_BYTES", "wire_size"]

#: The largest message our producers send: librdkafka's default ``message.max.bytes``, which
#: they keep (pipeline/kafka/clients.py sets no other).
MAX_MESSAGE_BYTES = 1_000_000
#: librdkafka's RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD: a v2 record's length, attributes,
#: timestamp and offset deltas, key and value lengths and header count, each at its widest.
_RECORD_OVERHEAD = 5 + 1 + 10 + 5 + 5 + 5 + 5


def wire_size(
    key: str | bytes | None,
    value: str | bytes | None,
    headers: Iterable[tuple[str, str | bytes | None]] | None,
) -> int:
    """librdkafka's ``rd_kafka_msg_max_wire_size``: the key, the value and each header's name
    and value with their lengths (zigzag varints), plus the widest record overhead. Text
    counts as its UTF-8 bytes (lone surrogates as the bytes they stand for)."""
    size = _RECORD_OVERHEAD + _byte_length(key) + _byte_length(value)
    for name, data in headers or ():
        name_size = len(name.encode("utf-8", "surrogateescape"))
        data_size = _byte_length(data)
        size += name_size + data_size + _varint_size(name_size) + _varint_size(data_size)
    return size


def _byte_length(data: str | bytes | None) -> int:
    if data is None:
        return 0
    return len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogateescape"))


def _varint_size(length: int) -> int:
    """Bytes of ``length`` as a zigzag varint (Kafka's record format)."""
    rest, size = length << 1, 1  # never negative here
    while rest >= 0x80:
        rest >>= 7
        size += 1
    return size

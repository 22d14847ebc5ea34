"""Kafka's default partitioner for keyed messages: murmur2 of the key, modulo the partitions.

Our producers let librdkafka partition (``partitioner=murmur2_random``, see
:func:`pipeline.kafka.clients.producer_config`). Code that has no producer still needs the same
answer: the broker-free test driver puts a keyed message on the partition a real producer
would. confluent-kafka exposes librdkafka's ``murmur2`` to Python only from version 2.13 on, and
this package supports 2.6 and later, so the 32-bit MurmurHash2 of the Java client
(``org.apache.kafka.common.utils.Utils.murmur2``, seed ``0x9747b28c``) is written out here; it is
short and pure. Its tests compare it with Kafka's own test vectors, with confluent-kafka's
function where there is one, and with the partitions a real producer chose.
"""

from __future__ import annotations

__all__ = ["murmur2", "partition_for"]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_R = 24
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """The Java client's murmur2 hash of ``data`` as a signed 32-bit int (like Java's)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for index in range(0, whole, 4):
        k = int.from_bytes(data[index : index + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> _R
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length % 4
    # Java's switch falls through: three trailing bytes also mix in the second and the first.
    if tail == 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partitions``
    (``toPositive(murmur2(key)) % partitions``, as the Java client, kcat with
    ``partitioner=murmur2_random`` and our producers do)."""
    if partitions <= 0:
        raise ValueError(f"a topic has at least one partition, got {partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions

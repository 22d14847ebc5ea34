"""Kafka's default partitioner, written out: the Java client's murmur2 and its partition."""

from __future__ import annotations

import random

import confluent_kafka
import pytest

from pipeline.kafka.partitioner import murmur2, partition_for

# org.apache.kafka.common.utils.UtilsTest.testMurmur2: the Java client's own expectations.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "expected"), JAVA_MURMUR2.items(), ids=lambda v: str(v)[:12])
def test_murmur2_gives_the_java_clients_hash(key, expected):
    assert murmur2(key) == expected


def test_the_partition_is_the_positive_hash_modulo_the_partitions():
    for key, expected in JAVA_MURMUR2.items():
        assert partition_for(key, 7) == (expected & 0x7FFFFFFF) % 7
    assert partition_for(b"anything", 1) == 0


@pytest.mark.skipif(
    not hasattr(confluent_kafka, "murmur2"), reason="confluent-kafka < 2.13 has no murmur2"
)
def test_partitions_agree_with_librdkafkas_murmur2_for_keys_of_every_length():
    rng = random.Random(20261202)
    keys = [rng.randbytes(length) for length in range(64) for _ in range(30)]
    keys += [f"order-{n}".encode() for n in range(500)] + ["ключ-ü".encode()]
    for partitions in (1, 3, 6, 7, 100):
        ours = [partition_for(key, partitions) for key in keys]
        assert ours == [confluent_kafka.murmur2(key, partitions) for key in keys]


def test_a_topic_without_partitions_is_refused():
    with pytest.raises(ValueError, match="at least one partition"):
        partition_for(b"k", 0)

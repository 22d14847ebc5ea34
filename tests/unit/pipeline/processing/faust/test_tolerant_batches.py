"""aiokafka reading a fetched batch with a header name that is not UTF-8 (the patch in
pipeline/processing/faust/tolerant_batches.py), on hand-made batches, without a broker.

aiokafka's builders write text names only, so a batch is built with a placeholder name of the
same length, whose bytes are then replaced (and the batch's CRC computed again).
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import logging
import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
from aiokafka.consumer import fetcher  # type: ignore[import-untyped]
from aiokafka.record import default_records  # type: ignore[import-untyped]
from aiokafka.record.default_records import DefaultRecordBatchBuilder  # type: ignore[import-untyped]
from aiokafka.record.memory_records import MemoryRecords  # type: ignore[import-untyped]
from aiokafka.record.util import calc_crc32c  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from pipeline.dead_letters.letter import header_name_bytes
from pipeline.processing.faust import tolerant_batches

BAD = b"x-bad\xff\xfe"
PLACEHOLDER = b"x-bad__"
TP = TopicPartition("fxh.orders", 0)
_CRC_AT, _ATTRIBUTES_AT, _RECORDS_AT = 17, 21, 61


def batch(base_offset: int, names: list[bytes]) -> bytes:
    """A record batch: one record per name (key ``k<offset>``, a ``ce_id`` header, then a
    header with that name), offsets from ``base_offset``."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for delta, name in enumerate(names):
        placeholder = PLACEHOLDER if name == BAD else name
        headers = [("ce_id", f"e{base_offset + delta}".encode()), (placeholder.decode(), b"1")]
        key = f"k{base_offset + delta}".encode()
        builder.append(delta, timestamp=1_000 + delta, key=key, value=b"{}", headers=headers)
    built = bytearray(builder.build())
    built[:8] = struct.pack(">q", base_offset)
    return with_crc(built.replace(PLACEHOLDER, BAD))


def with_crc(built: bytearray) -> bytes:
    built[_CRC_AT:_ATTRIBUTES_AT] = struct.pack(">I", calc_crc32c(bytes(built[_ATTRIBUTES_AT:])))
    return bytes(built)


def gzipped(plain: bytes) -> bytes:
    """``plain`` (an uncompressed batch) with its records compressed with gzip."""
    records = gzip.compress(plain[_RECORDS_AT:])
    built = bytearray(plain[:_RECORDS_AT] + records)
    attributes = struct.unpack_from(">h", built, _ATTRIBUTES_AT)[0] | 1  # codec: gzip
    struct.pack_into(">h", built, _ATTRIBUTES_AT, attributes)
    struct.pack_into(">i", built, 8, len(built) - 12)  # the batch length: the bytes after it
    return with_crc(built)


def read(data: bytes) -> list[Any]:
    """Every consumer record of ``data``, as the fetcher reads a partition's fetched bytes."""
    records = fetcher.PartitionRecords(
        TP, fetcher.MemoryRecords(data), None, 0, None, None, True, fetcher.READ_COMMITTED
    )
    return list(records)


@pytest.fixture
def unpatched(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiokafka as it is (also when a binding installed the patch earlier in this process);
    whatever a test installs is undone after it."""
    next_ = fetcher.PartitionRecords.__next__
    monkeypatch.setattr(fetcher.PartitionRecords, "__next__", getattr(next_, "__wrapped__", next_))
    monkeypatch.setattr(fetcher, "MemoryRecords", MemoryRecords)
    monkeypatch.setattr(tolerant_batches, "_installed", False)


@pytest.fixture
def patched(unpatched: None) -> Iterator[None]:
    assert tolerant_batches.install()
    yield


def test_unpatched_aiokafka_cannot_read_a_batch_with_a_header_name_that_is_not_utf8(
    unpatched: None,
) -> None:
    # The bug this patch is for: if aiokafka ever reads such a batch itself, the patch can go.
    with pytest.raises(UnicodeDecodeError):
        read(batch(0, [b"ok", BAD, b"ok"]))


def test_the_batch_is_read_again_and_every_record_comes_once_in_order(patched: None) -> None:
    data = batch(0, [b"ok", b"ok"]) + batch(2, [b"ok", BAD, b"ok"]) + batch(5, [b"ok"])

    records = read(data)

    assert [record.offset for record in records] == [0, 1, 2, 3, 4, 5]
    assert [record.key for record in records] == [f"k{n}".encode() for n in range(6)]
    bad = records[3]
    assert bad.headers == (("ce_id", b"e3"), ("x-bad\udcff\udcfe", b"1"))
    assert header_name_bytes(bad.headers[1][0]) == BAD
    assert (bad.value, bad.timestamp) == (b"{}", 1_001)
    assert all(record.headers[1][0] == "ok" for n, record in enumerate(records) if n != 3)


def test_a_compressed_batch_is_read_again_too(patched: None) -> None:
    records = read(batch(0, [b"ok"]) + gzipped(batch(1, [BAD, b"ok", BAD])))

    assert [record.offset for record in records] == [0, 1, 2, 3]
    assert [header_name_bytes(record.headers[1][0]) for record in records] == [
        None,
        BAD,
        None,
        BAD,
    ]


def test_a_bad_name_first_in_the_fetch_and_a_second_bad_batch_are_read(patched: None) -> None:
    records = read(batch(7, [BAD]) + batch(8, [b"ok", BAD]))

    assert [(record.offset, record.headers[1][0]) for record in records] == [
        (7, "x-bad\udcff\udcfe"),
        (8, "ok"),
        (9, "x-bad\udcff\udcfe"),
    ]


def test_it_says_which_batch_was_read_again(
    patched: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.processing"):
        read(batch(40, [b"ok", BAD]))

    assert caplog.messages == [
        "fxh.orders partition 0: a header name in the batch at offset 40 is not UTF-8; that "
        "batch is read again with aiokafka's Python reader"
    ]


def test_a_unicode_error_the_tolerant_reader_does_not_cure_is_raised(
    patched: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def deserializer_failing(self: Any, tp: Any, record: Any) -> Any:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "not ours to cure")

    monkeypatch.setattr(fetcher.PartitionRecords, "_consumer_record", deserializer_failing)

    with pytest.raises(UnicodeDecodeError):
        read(batch(0, [b"ok"]))


def test_installing_twice_patches_once(patched: None) -> None:
    wrapped = fetcher.PartitionRecords.__next__

    assert tolerant_batches.install()
    assert fetcher.PartitionRecords.__next__ is wrapped


def test_an_unchecked_aiokafka_is_left_as_it_is_with_a_warning(
    unpatched: None, caplog: pytest.LogCaptureFixture
) -> None:
    memory_records = fetcher.MemoryRecords

    with caplog.at_level(logging.WARNING, logger="pipeline.processing"):
        assert not tolerant_batches.install("0.15.0")

    assert fetcher.MemoryRecords is memory_records
    assert "a message whose header name is not UTF-8 stops this processor" in caplog.text


def test_a_python_reader_that_fails_the_self_test_is_not_relied_on(
    unpatched: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tolerant_batches._SurrogateEscapingSlice, "decode", bytearray.decode)

    assert not tolerant_batches.install()


# --- the aiokafka sources the patch was checked against ----------------------------------------


class Pinned(NamedTuple):
    owner: Any
    name: str
    sha256: str
    why: str


#: The aiokafka methods the patch relies on, by the SHA-256 of their source. When an aiokafka
#: upgrade changes one, re-check tolerant_batches.py (and its CHECKED_VERSIONS), then pin the
#: hash the failure prints.
PINNED = [
    Pinned(
        fetcher.PartitionRecords,
        "_unpack_records",
        "b803e6d46480732c7a7faa8e784b338bcdd4e707ea67fba96c013654b04b8a08",
        "iterates `for record in next_batch` (where the error comes from) over self._records, "
        "and skips records below next_fetch_offset: how a batch read again resumes",
    ),
    Pinned(
        fetcher.PartitionRecords,
        "__next__",
        "63ac34a08c309098fe6f0a08bc2870a6535069d7671187729bb5ffabd8efe2ac",
        "wrapped: a new _records_iterator must be all it takes to go on",
    ),
    Pinned(
        fetcher.Fetcher,
        "_proc_fetch_request",
        "59bf948fff47eed580671971252454daa614df479733f3bedfefe95bc4d8ad30",
        "makes MemoryRecords(part_data[-1]) per partition, then has_next() and size_in_bytes()",
    ),
    Pinned(
        default_records._DefaultRecordBatchPy,
        "_read_msg",
        "0997ab7a58505c939c31b1cf5809aff4ac6de70f713794d3c62bd049a3270a4a",
        'decodes a header name as buffer[pos : pos + size].decode("utf-8")',
    ),
    Pinned(
        default_records._DefaultRecordBatchPy,
        "_maybe_uncompress",
        "c9d0dc2bed50cc869d2dad835d60674244b4981082a86c1c1c5d82a6bef7c92c",
        "uncompresses into a new self._buffer",
    ),
    Pinned(
        default_records._DefaultRecordBatchPy,
        "__iter__",
        "492967e59f45912414cb665901de36872db2269a44a716e6738a23417b522953",
        "uncompresses (once) before the records are read",
    ),
]


@pytest.mark.parametrize("pinned", PINNED, ids=lambda pinned: pinned.name)
def test_the_aiokafka_source_is_the_one_checked(pinned: Pinned) -> None:
    found = hashlib.sha256(inspect.getsource(getattr(pinned.owner, pinned.name)).encode())

    assert found.hexdigest() == pinned.sha256, (
        f"aiokafka: {pinned.owner.__name__}.{pinned.name} is not the source "
        f"tolerant_batches.py was checked against ({pinned.why}). Re-check it, then pin "
        f"sha256 {found.hexdigest()}."
    )

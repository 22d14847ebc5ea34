"""Fetched batches in which a header name is not UTF-8: read, not fatal (a patch of aiokafka).

Kafka's protocol says a header name is a UTF-8 string, but the broker does not check it, and
some clients write any bytes (kcat, for one). aiokafka, the client under Faust, decodes every
header name with ``bytes.decode("utf-8")`` while it iterates a fetched batch
(``PartitionRecords._unpack_records``: ``for record in next_batch``), in its C reader as in its
Python one. One name that is not UTF-8 raised ``UnicodeDecodeError`` out of the fetch: Faust's
consumer died, and so did every member of the group that took the partition, at every restart.
aiokafka has no option to read header names as bytes or to skip such a record.

So, when iterating a batch raises ``UnicodeDecodeError``, that batch alone is read again by
aiokafka's pure-Python reader with its header names decoded with ``surrogateescape``: each byte
that is not UTF-8 becomes a lone surrogate (``b"x-bad\\xff"`` is ``"x-bad\\udcff"``), from which
:func:`pipeline.envelope.consumed_headers.header_name_bytes` gets the bytes back. The records before
the bad one were handed on already and are skipped; the bad one and those after it follow, in
order. Every other batch keeps the C reader, and costs one Python call per batch and one per
record (the wrapper of ``PartitionRecords.__next__``). The envelope refuses such a record, so
it is dead-lettered as ``undecodable``.

:func:`install` patches two things of ``aiokafka.consumer.fetcher``, once per process:

1. ``MemoryRecords``, which the fetcher makes from each partition's fetched bytes: it becomes
   :class:`TolerantMemoryRecords`, aiokafka's own (C) reader that keeps those bytes, so that
   its last batch can be given again, read tolerantly;
2. ``PartitionRecords.__next__``: on ``UnicodeDecodeError`` it has that batch given again and
   goes on with a new ``_unpack_records`` (the generator that raised is finished).

Only on the aiokafka versions it was checked against (:data:`CHECKED_VERSIONS`), and only if a
self-test (a hand-made batch with such a name) reads as it should; otherwise it logs one
WARNING and aiokafka is left as it is. ``tests/unit/pipeline/processing/faust/
test_tolerant_batches.py`` pins the source of every aiokafka method this relies on.
"""

from __future__ import annotations

import functools
import logging
import struct
from collections.abc import Callable
from typing import Any

# aiokafka ships no type information (its .pyi files cover the C readers only).
import aiokafka  # type: ignore[import-untyped]
from aiokafka.consumer import fetcher  # type: ignore[import-untyped]
from aiokafka.record.default_records import _DefaultRecordBatchPy  # type: ignore[import-untyped]

__all__ = ["CHECKED_VERSIONS", "TolerantMemoryRecords", "install", "tolerant_batch"]

logger = logging.getLogger("pipeline.processing")

#: The aiokafka versions whose record reading this module was checked against.
CHECKED_VERSIONS = ("0.14.",)

# Kafka's record batch (magic 2): base offset (int64), batch length (int32, the bytes after it),
# partition leader epoch (int32), magic (int8), ...: the protocol's layout, not aiokafka's.
_BATCH_HEAD = struct.Struct(">qi")
_LOG_OVERHEAD = _BATCH_HEAD.size
_MAGIC_AT = _LOG_OVERHEAD + 4

_installed = False


class _SurrogateEscapingSlice(bytearray):
    """A slice of a tolerant batch's buffer: decoded with ``surrogateescape``, whatever asked."""

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytearray.decode(self, encoding, "surrogateescape")


class _SurrogateEscapingBuffer(bytearray):
    """A batch's (uncompressed) bytes whose slices are :class:`_SurrogateEscapingSlice`.

    aiokafka's Python reader decodes a header name as ``buffer[pos : pos + size].decode("utf-8")``
    (``_DefaultRecordBatchPy._read_msg``); keys, values and header values it copies with
    ``bytes(...)``, which these slices leave as they are.
    """

    def __getitem__(self, index: Any) -> Any:
        item = super().__getitem__(index)
        return _SurrogateEscapingSlice(item) if isinstance(index, slice) else item


class _TolerantBatch(_DefaultRecordBatchPy):  # type: ignore[misc]  # final for typing only
    """aiokafka's Python reader of one batch, its header names decoded with ``surrogateescape``."""

    _buffer: bytearray  # the batch's bytes, uncompressed once iterated (aiokafka's)

    def __iter__(self) -> _TolerantBatch:
        super().__iter__()  # uncompresses into a new buffer: the names are read from that one
        self._buffer = _SurrogateEscapingBuffer(self._buffer)
        return self


def tolerant_batch(data: bytes | memoryview) -> Any:
    """The record batch (magic 2) ``data``, read by aiokafka's Python reader with header names
    decoded with ``surrogateescape``."""
    return _TolerantBatch(data)


class TolerantMemoryRecords:
    """aiokafka's ``MemoryRecords`` over one partition's fetched bytes (its C reader), able to
    give its last batch once more, read by :func:`tolerant_batch`."""

    def __init__(self, data: bytes, reader: Callable[[bytes], Any]) -> None:
        self._data = data
        self._records = reader(data)
        self._last: Any = None
        self._again: Any = None

    def size_in_bytes(self) -> int:
        return int(self._records.size_in_bytes())

    def has_next(self) -> bool:
        return self._again is not None or bool(self._records.has_next())

    def next_batch(self) -> Any:
        batch, self._again = self._again, None
        if batch is None:
            batch = self._records.next_batch()
        self._last = batch
        return batch

    def read_last_batch_again(self) -> int | None:
        """Have :meth:`next_batch` give the last batch again, read tolerantly; its base offset,
        or ``None`` when it cannot be (it was read tolerantly already, or is no v2 batch)."""
        last = self._last
        if isinstance(last, _TolerantBatch) or getattr(last, "magic", None) != 2:
            return None  # v0 and v1 messages have no headers
        base_offset = last.base_offset
        data = memoryview(self._data)
        pos = 0
        while pos + _MAGIC_AT < len(data):
            offset, length = _BATCH_HEAD.unpack_from(data, pos)
            end = pos + _LOG_OVERHEAD + length
            if offset == base_offset and data[pos + _MAGIC_AT] == 2 and end <= len(data):
                self._again = tolerant_batch(data[pos:end])
                return int(base_offset)
            pos = end
        return None


def _next_reading_again(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(original)  # its __wrapped__ is aiokafka's own (the tests pin its source)
    def __next__(self: Any) -> Any:
        try:
            return original(self)
        except UnicodeDecodeError:
            records = self._records
            if not isinstance(records, TolerantMemoryRecords):
                raise
            base_offset = records.read_last_batch_again()
            if base_offset is None:
                raise
            logger.warning(
                "%s partition %d: a header name in the batch at offset %d is not UTF-8; that "
                "batch is read again with aiokafka's Python reader",
                self._tp.topic,
                self._tp.partition,
                base_offset,
            )
            # The generator that raised is finished: a new one reads the batch again, skipping
            # the records before next_fetch_offset (handed on already), then the batches after.
            self._records_iterator = self._unpack_records()
            return __next__(self)

    return __next__


def install(version: str = aiokafka.__version__) -> bool:
    """Read batches with header names that are not UTF-8 (see the module docstring); whether
    that is in place (once per process; on an unchecked aiokafka, a WARNING and ``False``)."""
    global _installed
    if _installed:
        return True
    problem = _why_not(version)
    if problem is not None:
        logger.warning(
            "aiokafka %s: %s; a message whose header name is not UTF-8 stops this processor",
            version,
            problem,
        )
        return False
    reader = fetcher.MemoryRecords

    def memory_records(data: bytes) -> TolerantMemoryRecords:
        return TolerantMemoryRecords(data, reader)

    fetcher.MemoryRecords = memory_records
    partition_records: Any = fetcher.PartitionRecords
    partition_records.__next__ = _next_reading_again(partition_records.__next__)
    _installed = True
    return True


def _why_not(version: str) -> str | None:
    if not version.startswith(CHECKED_VERSIONS):
        checked = ", ".join(f"{v}x" for v in CHECKED_VERSIONS)
        return f"its record reading was not checked (checked: {checked})"
    for owner, name in (
        (fetcher, "MemoryRecords"),
        (fetcher.PartitionRecords, "_unpack_records"),
        (fetcher.PartitionRecords, "__next__"),
    ):
        if not hasattr(owner, name):
            return f"{getattr(owner, '__name__', owner)} has no {name}"
    try:
        names = [name for record in tolerant_batch(_SELF_TEST) for name, _ in record.headers]
    except Exception as error:  # the Python reader changed: do not rely on it
        return f"its Python record reader fails the self-test ({error!r})"
    if names != [_SELF_TEST_NAME.decode("utf-8", "surrogateescape")]:
        return f"its Python record reader fails the self-test (names {names!r})"
    return None


_SELF_TEST_NAME = b"x-bad\xff\xfe"
# One record batch (magic 2, offset 0, no compression) of one record with key b"k", value b"v"
# and one header named _SELF_TEST_NAME with value b"1", made by hand (aiokafka's builders write
# text names only). The CRC is not checked here.
_SELF_TEST = bytes.fromhex(
    "0000000000000000"  # base offset
    "00000044"  # batch length: the 68 bytes after this field
    "00000000"  # partition leader epoch
    "02"  # magic
    "00000000"  # crc (not checked)
    "0000"  # attributes
    "00000000"  # last offset delta
    "0000000000000001"  # first timestamp
    "0000000000000001"  # max timestamp
    "ffffffffffffffff"  # producer id
    "ffff"  # producer epoch
    "ffffffff"  # base sequence
    "00000001"  # record count
    "24"  # record length: 18 (zigzag varint)
    "00"  # attributes
    "00"  # timestamp delta
    "00"  # offset delta
    "02"  # key length 1
    "6b"  # b"k"
    "02"  # value length 1
    "76"  # b"v"
    "02"  # one header
    "0e"  # name length 7
    "782d626164fffe"  # b"x-bad\xff\xfe"
    "02"  # value length 1
    "31"  # b"1"
)

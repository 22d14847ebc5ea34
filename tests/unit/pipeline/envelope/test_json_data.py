"""dump_json: the very bytes and errors of json.dumps(..., ensure_ascii=False, compact)."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

import pytest
from pydantic_core import PydanticCustomError

from pipeline.envelope.json_data import (
    MAX_JSON_DEPTH,
    check_json,
    compact_json_object,
    dump_json,
    json_may_fail_check,
    parse_json,
)


class _Level(IntEnum):
    HIGH = 3


class _Colour(StrEnum):
    RED = "red"


def _reference(data: Any) -> bytes:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


SAME_BYTES: dict[str, Any] = {
    "known event's data": {
        "order_id": "order-42",
        "total": 12.5,
        "items": [1, 2],
        "note": "café",
        "gift": None,
    },
    "floats other encoders write differently": [1e-05, 1e16, 1.5e300, 5e-324, -0.0, 0.1, 100.0],
    "big ints": [2**63, -(2**63) - 1, 2**64, 10**40],
    "escapes and non-ASCII": ['"\\/\n\r\t\b\f\x00\x1f\x7f', "\u2028\u2029", "😀ü", ""],
    "scalars": [True, False, None, 0, "text"],
    "top-level string": "café",
    "nested": {"a": {"b": [{"c": [[], {}]}]}},
    "int and str subclasses": [_Level.HIGH, _Colour.RED],
}


@pytest.mark.parametrize("data", SAME_BYTES.values(), ids=SAME_BYTES.keys())
def test_dump_json_writes_the_bytes_of_json_dumps(data):
    assert dump_json(data) == _reference(data)


def _random_json(generator: random.Random, depth: int = 0) -> Any:
    """Checked JSON data of every kind dump_json tells apart: floats of every magnitude
    (msgspec writes those outside 1e-4 to 1e16 otherwise), big ints, text with escapes and
    characters beyond ASCII, int and str subclasses, nested objects and lists."""
    kind = generator.randrange(10 if depth < 4 else 7)
    if kind == 0:
        return generator.uniform(-10, 10) * 10.0 ** generator.randint(-330, 307)
    if kind == 1:
        return generator.choice([0.0, -0.0, 1e-4, 1e16, 9999999999999998.0, 5e-324, 0.1, 2.5])
    if kind == 2:
        return generator.choice([0, -1, 2**63, -(2**63) - 1, 10**40, True, False, None])
    if kind == 3:
        return generator.choice(["", "x" * 50, '"\\/\n\r\t\b\f\x00\x1f\x7f', "\u2028é😀", "1e5"])
    if kind == 4:
        return generator.choice([_Level.HIGH, _Colour.RED])
    if kind in (5, 6):
        return generator.randrange(1_000_000)
    if kind == 7:
        return [_random_json(generator, depth + 1) for _ in range(generator.randrange(5))]
    return {
        f"k{index}": _random_json(generator, depth + 1) for index in range(generator.randrange(6))
    }


@pytest.mark.parametrize("seed", range(3))
def test_dump_json_writes_the_bytes_of_json_dumps_for_random_data(seed):
    generator = random.Random(seed)
    for _ in range(3_000):
        data = _random_json(generator)
        check_json(data)

        assert dump_json(data) == _reference(data), data


BAD_DATA: dict[str, Any] = {
    "NaN": [float("nan")],
    "infinity": {"x": float("inf")},
    "tuple key": {(1,): 2},
    "an object": {"x": object()},
    "lone surrogate": ["\ud800"],
}


@pytest.mark.parametrize("data", BAD_DATA.values(), ids=BAD_DATA.keys())
def test_dump_json_raises_the_errors_of_json_dumps(data):
    with pytest.raises(Exception) as ours:
        dump_json(data)
    with pytest.raises(Exception) as reference:
        _reference(data)

    assert type(ours.value) is type(reference.value)
    assert str(ours.value) == str(reference.value)


def _nested_lists(depth: int) -> list[Any]:
    data: list[Any] = []
    for _ in range(depth):
        data = [data]
    return data


NOT_CHECKED: dict[str, Any] = {
    **BAD_DATA,
    "keys json turns into text": {2: "int", 1e-05: "small float", True: "bool", None: "null"},
    "a set inside": {"items": {1, 2}},
    "a datetime inside": [{"at": datetime(2026, 1, 1, tzinfo=UTC)}],
    "a tuple inside (json writes a list)": {"pair": (1, 2.5e-7)},
    "nested past the recursion limit": _nested_lists(10_000),
}


@pytest.mark.parametrize("data", NOT_CHECKED.values(), ids=NOT_CHECKED.keys())
def test_dump_json_gives_the_bytes_or_the_error_of_json_dumps_for_unchecked_data(data):
    try:
        expected: Any = _reference(data)
    except Exception as error:
        expected = (type(error), str(error))
    try:
        written: Any = dump_json(data)
    except Exception as error:
        written = (type(error), str(error))

    assert written == expected


def test_dump_json_refuses_data_that_holds_itself_as_it_did_before_msgspec():
    data: dict[str, Any] = {"n": 1}
    data["self"] = [data]

    with pytest.raises(RecursionError):
        dump_json(data)


# The earlier definition of json_may_fail_check: one pattern over the whole text.
_EARLIER_OVERFLOW = re.compile(r"\d(?:[eE]|\d{308})")


def _earlier_may_fail_check(text: str) -> bool:
    return (
        "\\u" in text
        or text.count("[") + text.count("{") > MAX_JSON_DEPTH
        or _EARLIER_OVERFLOW.search(text) is not None
    )


@pytest.mark.parametrize("seed", range(3))
def test_json_may_fail_check_answers_as_its_earlier_definition_for_json_text(seed):
    generator = random.Random(seed)
    pieces = ['{"a":', "[", "]", "{", "}", "1", "9" * 150, "e", "E", "5", '"note"', "\\u00e9"]
    pieces += [" ", ",", "-", ".", "x", "1e308", "2E-400", "[" * 100, "{" * 60]
    for _ in range(3_000):
        text = "".join(generator.choices(pieces, k=generator.randrange(1, 40)))

        assert json_may_fail_check(text) == _earlier_may_fail_check(text), text


# --- compact_json_object: the C path gives what parse_json, check_json and dump_json give ------


def _general_path(line: bytes) -> tuple[dict[str, Any], bytes] | None:
    """What the general path makes of a line: its object and bytes, or None if it refuses it."""
    try:
        data = parse_json(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None
    if not isinstance(data, dict):
        return None
    try:
        check_json(data)
    except PydanticCustomError:
        return None
    return data, dump_json(data)


def _same_as_the_general_path(line: bytes) -> bool:
    """Whether the C path took the line; fails if it took it otherwise than the general path."""
    fast = compact_json_object(line)
    if fast is None:
        return False
    general = _general_path(line)
    assert general is not None, f"the C path took a line the general path refuses: {line!r}"
    assert fast[1] == general[1], line
    assert repr(fast[0]) == repr(general[0]), line  # the same types too (1.0 is not 1)
    return True


#: Lines every envelope test tells apart, and more edges of JSON and of the envelope's check.
EDGE_LINES: list[bytes] = [
    b'{"id": "order-000001", "seq": 1, "customer": "c-1", "amount": 13.5, "note": "x"}',
    b'{"a": 1.0, "b": -0.0, "c": 0.0, "d": 1E2, "e": 0.1e1, "f": 2.5e-400, "g": 1.5e15}',
    b'{"a": 1.5e300, "b": 5e-324}',
    b'{"small": 0.0001, "smaller": 0.00009999, "tiny": 1e-5, "big": 9999999999999998.0}',
    b'{"big": 10000000000000000.0, "bigger": 1e16, "huge": 1.7976931348623157e308}',
    b'{"overflow": 1e400, "negative": -1E400, "digits": ' + b"9" * 309 + b".5}",
    b'{"ints": [0, -0, 18446744073709551616, -9223372036854775809, 123456789012345678]}',
    b'{"n": ' + b"9" * 4300 + b"}",
    b'{"n": ' + b"9" * 4301 + b"}",
    b'{"s": "\\u00e9\\ud83d\\ude00 \\n\\t\\"\\\\\\/ \\u0000 \\u001f"}',
    b'{"lone": "\\ud800"}',
    b'{"\\udc80": 1}',
    b'{"raw": "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x80\xa8 \x7f"}',
    b'{"bad utf8": "\xff"}',
    b'{"surrogate in utf8": "\xed\xa0\x80"}',
    b'{"overlong": "\xc0\x80"}',
    b'{"beyond unicode": "\xf4\x90\x80\x80"}',
    b'{"control": "a\tb"}',
    b'{"control": "a\x01b"}',
    b'{"a": 1, "a": 2, "b": 3}',
    b'  {"a" :1 , "b": [1 ,2]}\t\r',
    b'\xef\xbb\xbf{"bom": 1}',
    b'{"a": 1} x',
    b'{"a": 1,}',
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'{"a": -Infinity}',
    b'{"a": 01}',
    b'{"a": 1.}',
    b'{"a": .5}',
    b'{"a": +1}',
    b'{"a": 1e}',
    b"{'a': 1}",
    b'{"a": tru}',
    b"\x0b{}",
    b"\x0c{}",
    b"\xc2\xa0{}",
    b"{}",
    b"",
    b"   ",
    b"[1, 2]",
    b'"text"',
    b"42",
    b"null",
    b'{"deep": ' + b"[" * 255 + b"]" * 255 + b"}",
    b'{"deep": ' + b"[" * 256 + b"]" * 256 + b"}",
    b'{"deep": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"a":' * 256 + b"1" + b"}" * 256,
    b'{"a":' * 257 + b"1" + b"}" * 257,
    b'{"brackets in text": "' + b"[" * 300 + b'"}',
]

_FUZZ_BYTES = [
    *(bytes([b]) for b in b'{}[]",:0123456789eE.-+ \t\r\n\\/ustrfnalx'),
    b"\x00", b"\x1f", b"\x7f", b"\xc3\xa9", b"\xed\xa0\x80", b"\xff", b"\xef\xbb\xbf",
    b"\\u", b"\\ud800", b"\\u00e9", b"1e400", b"1e-7", b"0.0000", b"9" * 17, b"NaN", b"null",
]  # fmt: skip


def _mutated(generator: random.Random, line: bytes) -> bytes:
    for _ in range(generator.randrange(1, 4)):
        at = generator.randrange(len(line) + 1)
        piece = generator.choice(_FUZZ_BYTES)
        match generator.randrange(3):
            case 0:
                line = line[:at] + piece + line[at:]
            case 1:
                line = line[:at] + piece + line[at + len(piece) :]
            case _:
                line = line[:at] + line[at + generator.randrange(1, 4) :]
    return line


def test_the_c_path_takes_the_usual_lines():
    usual = [line for line in EDGE_LINES if _same_as_the_general_path(line)]

    assert EDGE_LINES[0] in usual
    assert EDGE_LINES[1] in usual  # floats of the common form, zeros, exponents within range
    assert b'{"a": 1, "a": 2, "b": 3}' in usual
    assert b"{}" in usual


def test_the_c_path_takes_each_edge_line_as_the_general_path_does_or_leaves_it():
    for line in EDGE_LINES:
        _same_as_the_general_path(line)


@pytest.mark.parametrize("seed", range(4))
def test_the_c_path_takes_fuzzed_lines_as_the_general_path_does_or_leaves_them(seed):
    generator = random.Random(seed)
    seeds = [line for line in EDGE_LINES if len(line) < 400]
    taken = 0
    for _ in range(5_000):
        taken += _same_as_the_general_path(_mutated(generator, generator.choice(seeds)))

    assert taken > 100  # the fuzzing reaches lines the C path takes, not only refusals

"""dump_json: the very bytes and errors of json.dumps(..., ensure_ascii=False, compact)."""

from __future__ import annotations

import json
import random
import re
from enum import IntEnum, StrEnum
from typing import Any

import pytest

from pipeline.envelope.json_data import MAX_JSON_DEPTH, dump_json, json_may_fail_check


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

"""JSON in events: which content types are JSON, what data fits them, and strict parsing.

The one place that decides whether a content type is JSON (:func:`is_json_content_type`), used
by the envelope, ``pipeline consume`` and the gateway; the check that data is made of JSON types
only (:func:`check_json`); and the strict parser (:func:`parse_json`) that refuses ``NaN`` and
``Infinity``, which plain :func:`json.loads` accepts.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from decimal import Decimal
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

import msgspec
from pydantic_core import PydanticCustomError

__all__ = [
    "CHECKED_JSON",
    "MAX_JSON_DEPTH",
    "already_checked",
    "check_json",
    "compact_json_object",
    "dump_json",
    "is_json_content_type",
    "json_may_fail_check",
    "parse_json",
    "refuse_constant",
    "unique_members",
]


def is_json_content_type(content_type: str) -> bool:
    """Whether ``content_type`` is JSON: ``application/json`` or any ``.../...+json`` type.

    Parameters such as ``; charset=utf-8`` are ignored, and case does not matter.
    """
    if content_type == "application/json":  # the usual one, without the string work
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


# --- the data check ---------------------------------------------------------------------------

#: Deeper JSON is refused, so that encoding it can never hit Python's recursion limit.
MAX_JSON_DEPTH = 256

# One value met while checking data: (value, its key or index, the node of its container, depth).
_Node = tuple[Any, str | int | None, Any, int]


def check_json(data: Any) -> None:
    """Raise a clear error unless ``data`` is made of dict/list/str/int/float/bool/None only.

    Iterative (no recursion), and the path of a bad value is only spelled out when one is found.
    The error is a ``PydanticCustomError``, as :class:`~pipeline.envelope.Event` validation
    reports it.
    """
    stack: list[_Node] = [(data, None, None, 0)]
    while stack:
        node = stack.pop()
        value, _, _, depth = node
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, int):
            _check_int(value, node)
            continue
        if isinstance(value, str):
            _check_utf8(value, node)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _not_json(node, f"{value!r} is not a JSON number")
        elif isinstance(value, list | dict):
            if depth >= MAX_JSON_DEPTH:
                raise PydanticCustomError(
                    "not_json",
                    "data nests more than {limit} JSON lists/objects deep",
                    {"limit": MAX_JSON_DEPTH},
                )
            if isinstance(value, list):
                stack.extend((item, index, node, depth + 1) for index, item in _backwards(value))
                continue
            for key in value:
                if not isinstance(key, str):
                    raise _not_json(node, f"key {key!r} is of type {type(key).__name__}, not str")
                _check_utf8(key, node)
            stack.extend((item, key, node, depth + 1) for key, item in reversed(value.items()))
        else:
            raise _not_json(node, f"type {type(value).__name__} is not a JSON type")


def _backwards(items: list[Any]) -> Iterator[tuple[int, Any]]:
    for index in range(len(items) - 1, -1, -1):
        yield index, items[index]


def _check_int(number: int, node: _Node) -> None:
    if number.bit_length() > 10_000:  # only huge ints can pass Python's int-to-str digit limit
        try:
            str(number)
        except ValueError as exc:
            raise _not_json(node, str(exc)) from None


def _check_utf8(text: str, node: _Node) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _not_json(node, f"a string holds {text[exc.start]!a}, not UTF-8") from None


def _not_json(node: _Node, reason: str) -> PydanticCustomError:
    keys: list[str | int | None] = []
    while node[2] is not None:
        keys.append(node[1])
        node = node[2]
    path = "data" + "".join(f"[{key!r}]" for key in reversed(keys))
    return PydanticCustomError(
        "not_json", "{path} is not JSON-compatible: {reason}", {"path": path, "reason": reason}
    )


#: The validation context key under which decode hands over data it parsed from JSON text that
#: cannot fail :func:`check_json` (see :func:`json_may_fail_check`); only that very object skips
#: the walk.
CHECKED_JSON = "pipeline.envelope:checked-json"


def already_checked(value: Any, context: Any) -> bool:
    """Whether the validation ``context`` marks ``value`` itself as parsed and safe."""
    return isinstance(context, dict) and CHECKED_JSON in context and context[CHECKED_JSON] is value


# --- writing ----------------------------------------------------------------------------------

# What json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False) runs, made
# once: json.dumps builds a JSONEncoder and then its C encoder for every call, which costs more
# than encoding a small event. The same C function with the same arguments writes the same text
# (``markers=None`` only skips the cycle check, and check_json refuses any cycle by its depth
# limit). Other encoders (msgspec, orjson, pydantic-core) are faster still but write some floats
# differently (1e-05 as 0.00001, 1e+16 as 1e16), so dump_json hands msgspec only the data it
# writes alike (_written_alike), and everything else to this one.
_DUMP_ARGUMENTS = (",", ":")
_REFERENCE_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=_DUMP_ARGUMENTS, allow_nan=False
)
_C_ENCODER: Any = (
    None
    if c_make_encoder is None
    else c_make_encoder(
        None,  # markers: no cycle check
        _REFERENCE_ENCODER.default,
        encode_basestring,
        None,  # indent
        ":",  # key separator
        ",",  # item separator
        False,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )
)


def _dump_json_as_json_does(data: Any) -> bytes:
    if _C_ENCODER is None:  # a Python without the json C accelerator
        return _REFERENCE_ENCODER.encode(data).encode("utf-8")
    return "".join(_C_ENCODER(data, 0)).encode("utf-8")


#: The types whose values msgspec writes as :func:`dump_json` does, floats aside (exact types:
#: msgspec refuses subclasses of str, int and float, and writes some other types json refuses).
_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})
_TEXT_ONLY = frozenset({str})
_C_WRITE = msgspec.json.Encoder().encode


#: Values an object or list may hold in all for msgspec to write them (the walk below stops
#: there, and json writes the rest): far more than an event's data holds, and a bound for data
#: that holds itself (a cycle, which json refuses).
_WALK_LIMIT = 100_000


def _written_alike(data: Any) -> bool:
    """Whether msgspec writes ``data`` byte for byte as json does: only dicts with text keys,
    lists, the plain scalars above and floats of magnitude 1e-4 to 1e16 (or zero), by exact
    type, at most :data:`_WALK_LIMIT` values."""
    # The usual event data, an object of scalars only, is judged pair by pair first: for the
    # few pairs such data has, a plain loop is half the cost of building the sets of its keys'
    # and values' types in C (0.24 against 0.44 us for two pairs, about 3% of sending an
    # event). Anything else is walked value by value (a stack that grows as it is read).
    if type(data) is dict:
        for key, value in data.items():
            if type(key) is not str or type(value) not in _PLAIN_SCALARS:
                break
        else:
            return True
    stack = [data]
    for value in stack:
        kind = type(value)
        if kind is dict:
            if not set(map(type, value)) <= _TEXT_ONLY:
                return False
            stack.extend(value.values())
        elif kind is list:
            stack.extend(value)
        elif kind is float:
            if value != 0.0 and not 1e-4 <= abs(value) < 1e16:
                return False
            continue
        elif kind in _PLAIN_SCALARS:
            continue
        else:
            return False
        if len(stack) > _WALK_LIMIT:
            return False
    return True


def dump_json(data: Any) -> bytes:
    """``data`` as compact UTF-8 JSON: the bytes of ``json.dumps(data, ensure_ascii=False,
    separators=(",", ":"), allow_nan=False).encode("utf-8")``, and the same errors.

    Written by msgspec in C where that gives the same bytes (:func:`_written_alike`: an event's
    usual data, at about half of json's cost), else, and on any error, by json's own encoder.
    """
    if _written_alike(data):
        try:
            return _C_WRITE(data)
        except Exception:  # a lone surrogate, nesting too deep: json says it its own way
            pass
    return _dump_json_as_json_does(data)


# --- parsing ----------------------------------------------------------------------------------


def refuse_constant(name: str) -> Any:
    """A JSON decoder's ``parse_constant``: NaN and Infinity are no JSON numbers."""
    raise ValueError(f"{name} is not a JSON number")


def unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's members as a dict, or a ValueError naming a name given twice (RFC 8259 says
    names SHOULD be unique; parsers disagree on which of two wins)."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise ValueError(f"the name {name!r} is given twice in one object")
            seen.add(name)
    return data


# One decoder for every call: json.loads with parse_constant would build a new one each time.
_JSON_DECODER = json.JSONDecoder(parse_constant=refuse_constant)
_UNIQUE_KEYS_DECODER = json.JSONDecoder(
    parse_constant=refuse_constant, object_pairs_hook=unique_members
)


def json_error_reason(error: json.JSONDecodeError) -> str:
    """What ``json`` found wrong, to be followed by where (`` at line 1 column 9``): its own
    message without the ``at`` some end with ("Unterminated string starting at")."""
    return error.msg.removesuffix(" at")


#: Request bodies (the gateway's, ``pipeline produce --type``): a number with a fraction or an
#: exponent as the exact :class:`~decimal.Decimal` written, not the nearest binary float
#: (``9.999999999999999999`` was read as 10.0, and a price went out rounded); integers stay int.
_EXACT_DECODER = json.JSONDecoder(
    parse_float=Decimal, parse_constant=refuse_constant, object_pairs_hook=unique_members
)


def parse_json(text: str, *, unique_keys: bool = False, exact_decimals: bool = False) -> Any:
    """``json.loads(text)``, except that ``NaN``, ``Infinity`` and ``-Infinity`` are refused
    (and, with ``unique_keys``, a name given twice in one object). With ``exact_decimals``
    (which implies ``unique_keys``: for request bodies), a number with a fraction or an
    exponent is the :class:`~decimal.Decimal` written.

    Raises :class:`json.JSONDecodeError` for text that is not JSON (a leading byte order mark
    included, as ``json.loads`` does), :class:`ValueError` for those constants, a name given
    twice or an int longer than Python converts, and :class:`RecursionError` for nesting too
    deep to parse.
    """
    if text.startswith("\ufeff"):  # what json.loads checks before it decodes
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    if exact_decimals:
        decoder = _EXACT_DECODER
    else:
        decoder = _UNIQUE_KEYS_DECODER if unique_keys else _JSON_DECODER
    # raw_decode skips decode's two whitespace regexes; the rare text it does not read to the
    # end (surrounding whitespace, extra data, an error) goes through decode as json.loads does.
    try:
        data, end = decoder.raw_decode(text)
    except json.JSONDecodeError:
        end = -1
    if end != len(text):
        data = decoder.decode(text)
    return data


# A digit before an exponent, or 309 digits in a row: a number that may overflow to inf. ASCII
# digits only (the only ones a JSON number has), and two patterns rather than one alternation:
# the exponent test alone runs at twice the speed, and only a text of 309+ characters can
# hold the run.
_EXPONENT = re.compile(r"[0-9][eE]")
_LONG_RUN = 309
_DIGIT_RUN = re.compile(rf"[0-9]{{{_LONG_RUN}}}")


def json_may_fail_check(text: str) -> bool:
    """Whether data parsed from JSON ``text`` could still fail :func:`check_json`.

    Parsed JSON has only JSON types and str keys, NaN/Infinity are refused while parsing, and
    ``text`` is valid UTF-8. What is left: a lone surrogate (only from a ``\\u`` escape), a float
    that overflows to inf (only with an exponent or 309+ digits), an int too long to print
    (thousands of digits, so the same test), and nesting deeper than 256 (impossible with at most
    256 ``[`` and ``{`` in all, so in a text of at most 256 characters). Each test errs on the
    side of checking.
    """
    return (
        "\\u" in text
        or (len(text) > MAX_JSON_DEPTH and text.count("[") + text.count("{") > MAX_JSON_DEPTH)
        or _EXPONENT.search(text) is not None
        or (len(text) >= _LONG_RUN and _DIGIT_RUN.search(text) is not None)
    )


# --- a JSON object line, in C -----------------------------------------------------------------

# msgspec parses and writes JSON in C, several times faster than json plus the checks above; the
# fast path below takes a line only where that gives exactly what parse_json, check_json and
# dump_json give (tests/unit/pipeline/envelope/test_json_data.py compares them on fuzzed lines):
#
# - msgspec accepts the same JSON grammar (no NaN/Infinity, no control characters in strings, the
#   same whitespace, the last of duplicate keys), validates UTF-8 as strictly as Python, refuses a
#   lone surrogate escape and an int longer than Python converts (sys.get_int_max_str_digits), and
#   reads floats through float() here, as json does;
# - it writes strings, ints and floats of magnitude 1e-4 to 1e16 (and zero) exactly as dump_json;
#   it writes other floats in another form (1e-05 as 0.00001, 1e+16 as 1e16), so a line holding
#   one is declined, as is one that overflows to inf;
# - nesting deeper than MAX_JSON_DEPTH is only possible with more [ and { than that: declined.


class _Declined(Exception):
    """A line the C path leaves to parse_json and dump_json."""


def _float_in_common_form(text: str) -> float:
    value = float(text)
    if value != 0.0 and not 1e-4 <= abs(value) < 1e16:  # inf too
        raise _Declined
    return value


_C_DECODE = msgspec.json.Decoder(float_hook=_float_in_common_form).decode
_C_ENCODE = msgspec.json.Encoder().encode


def compact_json_object(line: bytes) -> tuple[dict[str, Any], bytes] | None:
    """The JSON object of the UTF-8 ``line`` and its compact form, or None if not read here.

    When not None: ``parse_json(line.decode())`` gives the same dict, which passes
    :func:`check_json`, and the bytes are what :func:`dump_json` writes of it. None: anything
    else (not an object, not JSON, JSON the envelope may refuse, a float written in another form,
    a byte order mark...), for the caller's general path to decide, with its own errors.
    """
    if len(line) > MAX_JSON_DEPTH and line.count(b"[") + line.count(b"{") > MAX_JSON_DEPTH:
        return None
    try:
        data = _C_DECODE(line)
    except (msgspec.DecodeError, _Declined, RecursionError):
        return None
    if type(data) is not dict:
        return None
    return data, _C_ENCODE(data)

"""Fresh event ids for a replay (``--rewrite-ids``), everything else kept (pure).

An event's id is its ``ce_id`` header (CloudEvents binary mode), or the ``id`` member of its
value (structured mode). A replay sends the same events again, and an idempotent consumer (the
inbox) skips an id it has already handled; with fresh ids they are handled as new events. Only
the id changes: the other headers (causation and correlation ids included), their order and
the key stay as recorded, and so does the value: a structured event's differs only in the
text of its ``id`` (of each ``id`` member, when its object names one twice). Which mode an event
is in is decided as the decoder (``pipeline.envelope.binary_mode.decode``) decides it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

from pipeline.envelope.binary_mode import is_structured_message
from pipeline.ids import new_event_id

__all__ = ["EVENT_ID_HEADER", "Headers", "rewrite_event_id", "rewrite_ids"]

EVENT_ID_HEADER = "ce_id"

#: Header values as recorded: bytes, or text as a replay reads it from a line; or null.
Headers = Sequence[tuple[str, str | bytes | None]]


def rewrite_event_id(
    headers: Headers, new_id: Callable[[], str] = new_event_id
) -> tuple[Headers, bool]:
    """``headers`` with every ``ce_id`` value replaced by one fresh id; and whether there was
    one (headers without ``ce_id`` come back as they are)."""
    if not any(name == EVENT_ID_HEADER for name, _ in headers):
        return headers, False
    fresh = new_id().encode("utf-8")
    return tuple(
        (name, fresh if name == EVENT_ID_HEADER else value) for name, value in headers
    ), True


def rewrite_ids(
    headers: Headers, value: str | bytes | None, new_id: Callable[[], str] = new_event_id
) -> tuple[Headers, str | bytes | None]:
    """The headers and value of a message with a fresh event id: in its ``ce_id`` header(s)
    (:func:`rewrite_event_id`); and, for a structured-mode event (:func:`_structured`: as
    :func:`pipeline.envelope.binary_mode.decode` tells the modes apart), in every ``id``
    member of its value's top-level object, the same fresh id in each (the decoder reads the
    last of duplicate members). Anything else comes back as it is."""
    if value is None or not _structured(headers, value):
        return rewrite_event_id(headers, new_id)[0], value
    try:
        text = value.decode("utf-8") if isinstance(value, bytes) else value
    except ValueError:  # not UTF-8 JSON after all: no id in it to give
        return rewrite_event_id(headers, new_id)[0], value
    places = _top_level_ids(text)
    if not places:
        return rewrite_event_id(headers, new_id)[0], value
    fresh = new_id()
    written = json.dumps(fresh, ensure_ascii=False)
    parts: list[str] = []
    done = 0
    for start, end in places:
        parts += (text[done:start], written)
        done = end
    parts.append(text[done:])
    rewritten = "".join(parts)
    # A ce_id header the decoder ignores here (structured mode) gets the same id: a reader of
    # the header (a dead letter's) and the decoder then agree.
    headers = rewrite_event_id(headers, lambda: fresh)[0]
    return headers, rewritten.encode("utf-8") if isinstance(value, bytes) else rewritten


_DECODER = json.JSONDecoder()
#: JSON's whitespace, matched from a position (no copy of the rest of the text per member).
_SPACE = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, at: int) -> int:
    return _SPACE.match(text, at).end()  # type: ignore[union-attr]  # [ ]* always matches


def _top_level_ids(text: str) -> list[tuple[int, int]]:
    """Where the string values of the ``id`` members of the JSON object ``text`` are, (start,
    end) in order, so that only they are replaced: every other byte stays as recorded, numbers
    included (parsed and written again, ``3.14159265358979323846`` lost digits and ``1e2``
    became ``100.0``). Empty when ``text`` is no object or has no string ``id``; a text that
    stops being JSON part way gives those found before.

    Every member is walked, not only up to the first ``id``: of duplicate members, the
    decoder (``json.loads``) reads the last. Written by hand: the standard library's decoder
    gives values, not where they are; its ``raw_decode`` is walked over the object's members
    here."""
    found: list[tuple[int, int]] = []
    at = _skip_space(text, 0)
    if not text.startswith("{", at):
        return found
    at += 1
    try:
        while True:
            at = _skip_space(text, at)
            if text.startswith("}", at) or not text.startswith('"', at):
                return found
            key, at = _DECODER.raw_decode(text, at)
            at = _skip_space(text, at)
            if not text.startswith(":", at):
                return found
            at = _skip_space(text, at + 1)
            member, end = _DECODER.raw_decode(text, at)
            if key == "id" and isinstance(member, str):
                found.append((at, end))
            at = _skip_space(text, end)
            if not text.startswith(",", at):
                return found
            at += 1
    except ValueError:  # not JSON from here on
        return found


def _structured(headers: Headers, value: str | bytes) -> bool:
    """Whether the decoder reads the message as a structured-mode event."""
    return is_structured_message(list(headers), value.encode() if isinstance(value, str) else value)

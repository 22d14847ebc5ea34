"""Fresh event ids for a replay (``--rewrite-ids``), everything else kept (pure).

An event's id is its ``ce_id`` header (CloudEvents binary mode), or the ``id`` member of its
value (structured mode). A replay sends the same events again, and an idempotent consumer (the
inbox) skips an id it has already handled; with fresh ids they are handled as new events. Only
the id changes: the other headers (causation and correlation ids included), their order and
the key stay as recorded, and so does the value: a structured event's differs only in the
text of its ``id``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

from pipeline.envelope.structured_mode import is_structured, looks_structured
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
    (:func:`rewrite_event_id`), else, for a structured-mode event (a ``content-type:
    application/cloudevents...`` header, or no ``ce_*`` header and a JSON object with
    ``specversion``), in its value's ``id``. Anything else comes back as it is."""
    rewritten, had_id = rewrite_event_id(headers, new_id)
    if had_id or value is None or not _structured(headers, value):
        return rewritten, value
    try:
        text = value.decode("utf-8") if isinstance(value, bytes) else value
        place = _top_level_id(text)
    except ValueError:  # not UTF-8 JSON after all (UnicodeDecodeError too): no id to give
        return headers, value
    if place is None:
        return headers, value
    start, end = place
    fresh = text[:start] + json.dumps(new_id(), ensure_ascii=False) + text[end:]
    return headers, fresh.encode("utf-8") if isinstance(value, bytes) else fresh


_DECODER = json.JSONDecoder()
#: JSON's whitespace, matched from a position (no copy of the rest of the text per member).
_SPACE = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, at: int) -> int:
    return _SPACE.match(text, at).end()  # type: ignore[union-attr]  # [ ]* always matches


def _top_level_id(text: str) -> tuple[int, int] | None:
    """Where the string value of the ``id`` member of the JSON object ``text`` is (start, end),
    so that only it is replaced: every other byte stays as recorded, numbers included (parsed
    and written again, ``3.14159265358979323846`` lost digits and ``1e2`` became ``100.0``).
    ``None`` when ``text`` is no object or has no string ``id``; :class:`ValueError` when it is
    not JSON.

    Written by hand: the standard library's decoder gives values, not where they are; its
    ``raw_decode`` is walked over the object's members here."""
    at = _skip_space(text, 0)
    if not text.startswith("{", at):
        return None
    at += 1
    while True:
        at = _skip_space(text, at)
        if text.startswith("}", at):
            return None
        if not text.startswith('"', at):
            raise ValueError("not a JSON object")
        key, at = _DECODER.raw_decode(text, at)
        at = _skip_space(text, at)
        if not text.startswith(":", at):
            raise ValueError("not a JSON object")
        at += 1
        at = _skip_space(text, at)
        member, end = _DECODER.raw_decode(text, at)
        if key == "id":
            return (at, end) if isinstance(member, str) else None
        at = _skip_space(text, end)
        if text.startswith(",", at):
            at += 1
        elif text.startswith("}", at):
            return None
        else:
            raise ValueError("not a JSON object")


def _structured(headers: Headers, value: str | bytes | None) -> bool:
    content_type = None
    for name, text in headers:
        if name.lower().startswith("ce_"):
            return False  # binary mode (with no ce_id: nothing to rewrite)
        if name.lower() == "content-type" and text is not None:
            content_type = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    if content_type is not None and is_structured(content_type):
        return True
    return looks_structured(value.encode() if isinstance(value, str) else value)

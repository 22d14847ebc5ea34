"""Fresh event ids for a replay (``--rewrite-ids``), everything else kept (pure).

An event's id is its ``ce_id`` header (CloudEvents binary mode). A replay sends the same events
again, and an idempotent consumer (the inbox) skips an id it has already handled; with fresh
ids they are handled as new events. Only ``ce_id`` changes: the other headers (causation and
correlation ids included), their order, the key and the value stay as recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.ids import new_event_id

__all__ = ["EVENT_ID_HEADER", "Headers", "rewrite_event_id"]

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

"""Counts in words: "1 event", "2 events", never "event(s)"."""

from __future__ import annotations


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """``count`` and the noun that agrees with it, with thousands separators.

    The plural is ``singular + "s"`` unless given: ``counted(2, "entry", "entries")``.
    """
    noun = singular if count == 1 else (plural or f"{singular}s")
    return f"{count:,} {noun}"

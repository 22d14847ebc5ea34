"""The context of the event being handled, attached to every log record made inside it.

:func:`log_context` is a context manager over one :mod:`contextvars` variable, so it is

- nestable: an inner block adds or overrides fields, and the outer ones come back on exit;
- thread-safe: each thread starts with an empty context (a thread pool worker does not see
  its submitter's ids unless the submitter hands them over with ``contextvars.copy_context``);
- asyncio-safe: each task runs in a copy of the context of the code that created it, so
  concurrent handlers never see each other's ids.

The processor runtime calls it around each handler call; the log handler reads
:func:`current_context` when a record is made (in the logging thread, never later).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

__all__ = ["CONTEXT_FIELDS", "current_context", "log_context"]

#: The fields, in the order they appear under ``pipeline`` in a log document.
CONTEXT_FIELDS = (
    "event_id",
    "correlation_id",
    "causation_id",
    "saga_id",
    "topic",
    "event_type",
    "consumer_group",
    "partition",
    "offset",
)

_EMPTY: Mapping[str, str | int] = MappingProxyType({})
_context: ContextVar[Mapping[str, str | int]] = ContextVar("pipeline_log_context", default=_EMPTY)


def current_context() -> Mapping[str, str | int]:
    """The fields set by the enclosing :func:`log_context` blocks (read-only; empty outside)."""
    return _context.get()


@contextmanager
def log_context(
    event_id: str | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    saga_id: str | None = None,
    topic: str | None = None,
    event_type: str | None = None,
    consumer_group: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> Iterator[Mapping[str, str | int]]:
    """Within the block, every log record carries these fields (``None`` keeps the outer value).

    Yields the whole context in effect inside the block.
    """
    given: dict[str, str | int | None] = {
        "event_id": event_id,
        "correlation_id": correlation_id,
        "causation_id": causation_id,
        "saga_id": saga_id,
        "topic": topic,
        "event_type": event_type,
        "consumer_group": consumer_group,
        "partition": partition,
        "offset": offset,
    }
    for name, value in given.items():
        if value is None:
            continue
        if name in ("partition", "offset"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"log_context({name}=...) must be an int, got {value!r}")
        elif not isinstance(value, str):
            raise TypeError(f"log_context({name}=...) must be a str, got {value!r}")
    merged = {**_context.get(), **{k: v for k, v in given.items() if v is not None}}
    inner: Mapping[str, str | int] = MappingProxyType(merged)
    token = _context.set(inner)
    try:
        yield inner
    finally:
        _context.reset(token)

"""Why an event was dead-lettered: the values of the ``dlq.reason`` header.

Apart from :mod:`pipeline.dead_letters.letter` so that ``pipeline dlq``'s help can list them
without loading the event envelope.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["REASONS", "Reason"]

Reason = Literal[
    "undecodable",  # the value or headers are not an event at all
    "schema_invalid",  # an event, but its data does not fit the handler's model
    "unhandled_type",  # no handler for this event type on this topic
    "rejected",  # the handler refused it for good (raised Reject)
    "retries_exhausted",  # the handler kept failing
    "key_parked",  # an earlier event of the same key is dead-lettered: order is kept
]
REASONS: tuple[str, ...] = get_args(Reason)

"""What Kafka accepts as a topic name, checked where a name comes in (the outbox's routes and
``topic=``, the commands' arguments) rather than first by the broker, whose refusal a relay
could only report as a topic that "does not exist" for ever. The catalogue's own, stricter
naming rules are :func:`pipeline.topics.spec.name_problem`."""

from __future__ import annotations

import re

__all__ = ["MAX_NAME_LENGTH", "kafka_name_problem"]

#: Kafka's limit on a topic name's length.
MAX_NAME_LENGTH = 249
_KAFKA_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def kafka_name_problem(name: str) -> str | None:
    """Why Kafka would refuse ``name`` as a topic name, or ``None`` when it would not."""
    if not _KAFKA_NAME.fullmatch(name) or name in (".", ".."):
        return (
            f"{name!r} is not a Kafka topic name (1 to {MAX_NAME_LENGTH} letters, digits, '.', "
            "'_' and '-')"
        )
    return None

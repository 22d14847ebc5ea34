"""Checks of option values that Typer's types do not make, as option callbacks."""

from __future__ import annotations

import typer


def non_empty(value: str | None) -> str | None:
    """An option that, when given, must hold some text (``--group ''`` named no group)."""
    if value is not None and not value.strip():
        raise typer.BadParameter("must not be empty")
    return value


def group_name(value: str | None) -> str | None:
    """A consumer group's name, when given: some text, without control characters (a line
    break, an escape: Kafka takes them, and they garble every terminal the group is shown on)."""
    from pipeline.envelope.event import control_character_at  # the envelope's own rule

    value = non_empty(value)
    if value is not None and (at := control_character_at(value)) is not None:
        raise typer.BadParameter(f"holds a control character ({value[at]!r} at {at + 1})")
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # argv's bytes that are not UTF-8: the Kafka client aborted
            raise typer.BadParameter("is not UTF-8 text") from None
    return value


def positive(value: float | None) -> float | None:
    """A number of seconds that, when given, is more than 0."""
    if value is not None and not value > 0:
        raise typer.BadParameter("must be more than 0")
    return value

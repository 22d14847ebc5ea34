"""Checks of option values that Typer's types do not make, as option callbacks; and how a
value a user gave is quoted in a message (:func:`quoted`, :func:`shown_path`)."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from pipeline.settings.base import is_utf8

#: The most bytes a string of Kafka's protocol takes (a consumer group's id, say: an int16
#: length); a longer one timed out reading offsets, or was a shipper reconnecting for ever.
KAFKA_STRING_BYTES = 32_767
#: The longest saga id or name the saga store holds.
STORED_NAME_CHARACTERS = 255
#: The most characters of a value a message quotes (a name of 100 kB was a 300 kB error).
SHOWN_CHARACTERS = 60
#: Elasticsearch's limit on an index name's length, in bytes.
_INDEX_NAME_BYTES = 255
#: What a daily log index adds to the alias: ``<alias>-YYYY.MM.DD``.
_DAILY_SUFFIX = len("-YYYY.MM.DD")
#: The characters Elasticsearch refuses in an index name (its own list, and ':' since 7.0).
_NOT_IN_INDEX_NAME = re.compile(r'[\\/*?"<>| ,#:]')


def _control_character_at(value: str) -> int | None:
    from pipeline.envelope.event import control_character_at  # the envelope's own rule

    return control_character_at(value)


def quoted(value: str) -> str:
    """``value`` quoted for a message, escaped (its repr: ``'\\x1b'``, ``'\\udcff'``) and cut
    to its first :data:`SHOWN_CHARACTERS` characters when longer."""
    if len(value) <= SHOWN_CHARACTERS:
        return repr(value)
    return f"{value[:SHOWN_CHARACTERS]!r}... ({len(value):,} characters)"


def shown_path(path: Path | str) -> str:
    """A file's path for a message: as it is, or escaped (its repr) when it holds a control
    character or is not UTF-8 text, which would break the line or garble the terminal."""
    text = str(path)
    if _control_character_at(text) is None and is_utf8(text):
        return text
    return repr(text)


def non_empty(value: str | None) -> str | None:
    """An option that, when given, must hold some text (``--group ''`` named no group)."""
    if value is not None and not value.strip():
        raise typer.BadParameter("must not be empty")
    return value


def utf8_text(value: str | None) -> str | None:
    """A value, when given, that is UTF-8 text (a saga's id, a key's name: looked up in a
    database, whose driver raised a traceback for anything else)."""
    if value is not None and not is_utf8(value):
        raise typer.BadParameter("is not UTF-8 text")
    return value


def stored_name(value: str | None) -> str | None:
    """A saga's id or name, when given: UTF-8 text (:func:`utf8_text`) of at most the 255
    characters the saga store holds (a 100 kB name was echoed whole in the answer)."""
    value = utf8_text(value)
    if value is not None and len(value) > STORED_NAME_CHARACTERS:
        raise typer.BadParameter(
            f"is {len(value):,} characters long; at most {STORED_NAME_CHARACTERS}"
        )
    return value


def _text_without_controls(value: str) -> None:
    if (at := _control_character_at(value)) is not None:
        raise typer.BadParameter(f"holds a control character ({value[at]!r} at {at + 1})")
    utf8_text(value)


def group_name(value: str | None) -> str | None:
    """A consumer group's name, when given: some text, without control characters (a line
    break, an escape: Kafka takes them, and they garble every terminal the group is shown on),
    UTF-8 (else the Kafka client aborted the process), at most Kafka's 32,767 bytes."""
    value = non_empty(value)
    if value is None:
        return None
    _text_without_controls(value)
    if (size := len(value.encode("utf-8"))) > KAFKA_STRING_BYTES:
        raise typer.BadParameter(f"is {size:,} bytes long; Kafka takes at most 32,767")
    return value


def host_name(value: str | None) -> str | None:
    """A host name or address to listen on, when given: some text, UTF-8, without control
    characters, one the network can look up (no empty label, none over 63 characters)."""
    from pipeline.settings.base import host_problem

    value = non_empty(value)
    if value is not None:
        _text_without_controls(value)
        if (problem := host_problem(value)) is not None:
            raise typer.BadParameter(f"{quoted(value)}: {problem}")
    return value


def topic_name(value: str | None) -> str | None:
    """A topic's name, when given: one Kafka takes (quoted escaped and cut when it is not)."""
    from pipeline.topic_names import kafka_name_problem

    value = non_empty(value)
    if value is not None and (problem := kafka_name_problem(value)) is not None:
        raise typer.BadParameter(problem.replace(repr(value), quoted(value), 1))
    return value


def header_pairs(values: list[str] | None) -> list[str] | None:
    """``--header name=value`` pairs: UTF-8 text (a name that was not made the Kafka client
    crash), a name without control characters. Their form is checked where they are read."""
    for pair in values or ():
        if not is_utf8(pair):
            raise typer.BadParameter(f"{quoted(pair)} is not UTF-8 text")
        name = pair.partition("=")[0]
        if (at := _control_character_at(name)) is not None:
            raise typer.BadParameter(
                f"the name of {quoted(pair)} holds a control character ({name[at]!r} at {at + 1})"
            )
    return values


def http_url(value: str | None) -> str | None:
    """An http(s)://host[:port] URL, when given, whose port is a number up to 65535 (as the
    Elasticsearch URL setting is checked)."""
    from pipeline.settings.base import http_url_problem

    if value is not None and (problem := http_url_problem(value)) is not None:
        raise typer.BadParameter(problem)
    return value


def index_name(value: str | None) -> str | None:
    """An Elasticsearch read alias and index prefix, when given: a name Elasticsearch takes
    for its daily indices ``<alias>-YYYY.MM.DD`` (else it made a template no index matched)."""
    value = non_empty(value)
    if value is None:
        return None
    _text_without_controls(value)
    rule = 'lowercase, without spaces or \\ / * ? " < > | , # :, not starting with - _ +'
    if (
        value != value.lower()
        or _NOT_IN_INDEX_NAME.search(value)
        or value.startswith(("-", "_", "+"))
        or value in (".", "..")
    ):
        raise typer.BadParameter(f"{quoted(value)} is not an Elasticsearch index name ({rule})")
    most = _INDEX_NAME_BYTES - _DAILY_SUFFIX
    if (size := len(value.encode("utf-8"))) > most:
        raise typer.BadParameter(
            f"is {size:,} bytes long; at most {most} (its daily indices <alias>-YYYY.MM.DD "
            f"take Elasticsearch's {_INDEX_NAME_BYTES})"
        )
    return value


def positive(value: float | None) -> float | None:
    """A number of seconds that, when given, is more than 0."""
    if value is not None and not value > 0:
        raise typer.BadParameter("must be more than 0")
    return value

"""The fast path of ``pipeline produce``: an NDJSON line to its Kafka message, the JSON in C.

:func:`~producers.ndjson.parse_line` parses each line with :mod:`json`, builds and checks an
:class:`~pipeline.envelope.Event`, and encodes it: about 25 us per line. The usual line (a JSON
object whose key is text) needs none of that to be made into the same message: msgspec parses and
writes its JSON in C (:func:`~pipeline.envelope.json_data.compact_json_object`, which takes only
what the general path would accept, with the same result), and the run's template adds the
envelope's headers (:meth:`~pipeline.envelope.template.EventTemplate.checked_parts`). Any other
line is left to :func:`~producers.ndjson.parse_line`, which accepts or rejects it with its own
reasons, so both paths together accept exactly the lines the general path alone accepts, with
the same messages (but for the event ids and times); tests/unit/producers/test_ndjson.py compares
them on the envelope's fuzz cases.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.envelope import is_json_content_type
from pipeline.envelope.json_data import compact_json_object

if TYPE_CHECKING:
    from producers.ndjson import LineRules

__all__ = ["EncodedLine", "line_encoder"]

#: A line's Kafka message as its parts (key, value, headers), ready to send.
EncodedLine = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def line_encoder(rules: LineRules) -> Callable[[bytes], EncodedLine | None] | None:
    """A function from a line's bytes to its message, or to None for a line it leaves alone.

    For a line it makes a message of, :func:`~producers.ndjson.parse_line` makes the same one
    (but for the id and time); no :class:`~pipeline.envelope.Event` is made. It leaves any
    other line (not JSON, not an object, JSON the C path declines, a byte order mark, a missing
    or non-text key, a blank line) to :func:`~producers.ndjson.parse_line`, which accepts or
    rejects it with its reasons. None instead of a function for rules whose every line needs the
    general path: a request type (validated by its model).
    """
    if rules.request is not None:
        return None
    template = rules.event_template()
    if not is_json_content_type(template.event().datacontenttype):
        return None
    parse = compact_json_object
    parts = template.checked_parts
    extra = rules.headers
    path = rules.key_path
    if path is None:

        def unkeyed(raw: bytes) -> EncodedLine | None:
            parsed = parse(raw)
            return None if parsed is None else parts(parsed[1], None, extra)

        return unkeyed
    if len(path.steps) == 1 and type(path.steps[0]) is str:
        field = path.steps[0]

        def keyed_by_field(raw: bytes) -> EncodedLine | None:
            parsed = parse(raw)
            if parsed is None:
                return None
            key = parsed[0].get(field)
            # missing, empty, not text, or not printable (a control character?): parse_line says
            if type(key) is not str or not key or not key.isprintable():
                return None
            return parts(parsed[1], key, extra)

        return keyed_by_field

    def keyed_by_path(raw: bytes) -> EncodedLine | None:
        parsed = parse(raw)
        if parsed is None:
            return None
        try:
            key = path.find(parsed[0])
        except LookupError:  # the path ends early: parse_line says where
            return None
        if type(key) is not str or not key or not key.isprintable():
            return None
        return parts(parsed[1], key, extra)

    return keyed_by_path

"""Header names that are not UTF-8: found as their bytes, and refused by the envelope."""

from __future__ import annotations

import pytest

from pipeline.envelope import EnvelopeError, Event, decode, encode
from pipeline.envelope.consumed_headers import header_name_bytes

BAD_NAME = "x-bad\udcff\udcfe"  # b"x-bad\xff\xfe", as aiokafka reads it through the binding


def test_a_name_that_is_text_has_no_bytes_to_name():
    assert header_name_bytes("ce_id") is None
    assert header_name_bytes("café") is None
    assert header_name_bytes(BAD_NAME) == b"x-bad\xff\xfe"


def test_an_event_with_a_header_name_that_is_not_utf8_is_not_a_valid_message():
    # The envelope ignored headers other than ce_*: such a message was handled as an event
    # whose header could not even be sent on (in a dead letter, a redrive).
    message = encode(Event(source="/tests", type="Step", data={}))

    with pytest.raises(EnvelopeError, match=r"^header name is not UTF-8: b'x-bad\\xff\\xfe'$"):
        decode(message.value, [*message.headers, (BAD_NAME, b"1")], message.key)
    assert decode(message.value, [*message.headers, ("café", b"1")], message.key).type == "Step"

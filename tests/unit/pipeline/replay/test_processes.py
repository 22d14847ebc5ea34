"""What a replay of a file sends: the lines its check read, not lines added since (pure part)."""

import io

from pipeline.replay.processes import within


def test_within_gives_the_lines_of_the_bytes_checked_and_none_added_since():
    checked = b'{"topic":"t"}\n{"topic":"u"}\n'
    added = b'{"topic":"v"}\nnot json\n'
    assert list(within(io.BytesIO(checked + added), len(checked))) == [
        b'{"topic":"t"}\n',
        b'{"topic":"u"}\n',
    ]


def test_within_cuts_a_line_that_was_being_written_where_the_check_read_it():
    # The check read the last line before its writer finished it: it is sent as checked.
    assert list(within(io.BytesIO(b"one\ntwo, la"), 7)) == [b"one\n", b"two"]
    assert list(within(io.BytesIO(b"one\n"), 0)) == []
    assert list(within(io.BytesIO(b"one\n"), 100)) == [b"one\n"]

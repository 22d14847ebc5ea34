"""The recording format: kcat's field names, binary-safe, headers as ordered pairs."""

import base64
import io
import json
from pathlib import Path

import pytest

from pipeline.replay import recording
from pipeline.replay.recording import (
    RecordedMessage,
    RecordingError,
    RecordingWriter,
    bounded_lines,
    encode_line,
    format_line,
    message_for_replay,
    parse_line,
    parse_lines,
    parse_lines_for_replay,
    parse_numbered_lines_for_replay,
    read_recording,
    read_recording_for_replay,
)


def test_a_message_survives_a_round_trip_with_binary_bytes_duplicate_headers_and_nulls():
    message = RecordedMessage(
        topic="t",
        partition=3,
        offset=41,
        key=b"\xff\x00key",
        value=None,
        headers=(("dup", b"one"), ("bin", b"\x80\x81"), ("dup", b"two"), ("none", None)),
        timestamp_ms=1764690000123,
        timestamp_type="logappend",
    )
    line = format_line(message)
    assert parse_line(line) == message
    document = json.loads(line)
    assert list(document) == [
        "topic",
        "partition",
        "offset",
        "tstype",
        "ts",
        "key",
        "payload",
        "headers",
    ]
    assert document["key"] == {"base64": "/wBrZXk="}
    assert document["payload"] is None
    assert document["headers"] == [
        ["dup", "one"],
        ["bin", {"base64": "gIE="}],
        ["dup", "two"],
        ["none", None],
    ]


def test_utf8_text_is_kept_as_text():
    line = format_line(RecordedMessage("t", 0, 0, "clé".encode(), b'{"a": 1}'))
    assert json.loads(line)["key"] == "clé"
    assert json.loads(line)["payload"] == '{"a": 1}'


def test_a_kcat_json_line_with_flat_headers_is_read():
    kcat = (
        '{"topic":"orders","partition":1,"offset":7,"tstype":"create","ts":1700000000000,'
        '"broker":1,"headers":["ce_id","e-1","ce_type","x"],"key":"o-1","payload":"{}"}'
    )
    message = parse_line(kcat)
    assert message.headers == (("ce_id", b"e-1"), ("ce_type", b"x"))
    assert (message.topic, message.partition, message.offset) == ("orders", 1, 7)
    assert message.key == b"o-1" and message.value == b"{}"


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("not json", "not a recorded message"),
        ("[]", "not a JSON object"),
        ('{"partition": 0}', "no topic"),
        ('{"topic": 5}', r"topic must be text, got 5\)"),
        ('{"topic": ["t"]}', r'topic must be text, got \["t"\]'),
        ('{"topic": ""}', "the topic is empty"),
        ('{"topic": "t", "key": {"base64": "%%%"}}', "key is not valid base64"),
        ('{"topic": "t", "headers": ["a"]}', "alternate names and values"),
        ('{"topic": "t", "tstype": "later"}', "tstype must be one of"),
        ('{"topic": "t", "partition": true}', "partition and offset must be whole numbers"),
        ('{"topic": "t", "offset": false}', "partition and offset must be whole numbers"),
        ('{"topic": "t", "ts": true}', "ts must be milliseconds since the epoch"),
    ],
)
def test_a_line_that_is_not_a_message_says_where_and_why(line, says):
    with pytest.raises(RecordingError, match=says) as error:
        parse_line(line, where="capture.ndjson:3")
    assert str(error.value).startswith("capture.ndjson:3: ")


def _dumps_reference(message: RecordedMessage) -> str:
    """The line as ``json.dumps`` of the documented fields writes it."""

    def field(value):
        if value is None:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}

    document = {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "tstype": message.timestamp_type,
        "ts": message.timestamp_ms,
        "key": field(message.key),
        "payload": field(message.value),
        "headers": [[name, field(value)] for name, value in message.headers],
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize(
    "message",
    [
        RecordedMessage("t", 0, 0, None, None),
        RecordedMessage("t.é", 5, 2**40, b"k", b'{"q": "\\"quoted\\"", "tab": "\t"}'),
        RecordedMessage(
            "t", 1, 7, "ключ".encode(), "\x00\x1f\u2028 😀".encode(), timestamp_ms=None
        ),
        RecordedMessage(
            "t", 2, 3, b"\xff", b"\x80", (("a", None), ("a", b"\\"), ("\n", b"\xfe")), 12, "none"
        ),
    ],
)
def test_a_line_is_exactly_what_json_dumps_writes(message):
    assert format_line(message) == _dumps_reference(message)
    assert parse_line(format_line(message)) == message


LINES = [
    '{"topic":"t","partition":1,"offset":2,"tstype":"create","ts":5,"key":"k","payload":"v",'
    '"headers":[["a","1"],["a",null],["b",{"base64":"/w=="}]]}',
    '{"topic":"t","offset":1,"key":"k","payload":"v","headers":[["a","1"],["b",null]]}',
    '{"topic":"t","payload":"\\ud83d\\ude00"}',  # a surrogate pair: one character
    '{"topic":"t","ts":5}',  # no tstype: create, as a timestamp is there
    '{"topic":"t","headers":null,"key":{"base64":"AAE="}}',  # no tstype, no ts: none
    '{"topic":"t","payload":"\\udc80\\u00e9"}',  # a surrogate escape: the byte 0x80
    '{"topic":"t","topic":"u","broker":3}',  # the last of a duplicate name; unknown ignored
    '{"topic":"t","headers":["flat","kcat"]}',  # kcat's flat headers
]


@pytest.mark.parametrize("line", LINES)
def test_reading_a_file_gives_what_parse_line_gives_for_each_line(line):
    # parse_lines (files, stdin) decodes most lines on a fast path; parse_line is the reference.
    assert list(parse_lines([line.encode()], source="x")) == [parse_line(line)]


@pytest.mark.parametrize("line", LINES)
def test_a_replay_reads_the_same_messages_with_text_left_as_text(line):
    reference = parse_line(line)
    (read,) = parse_lines_for_replay([line.encode()], source="x")

    def as_bytes(value):
        return value.encode() if isinstance(value, str) else value

    assert (read.topic, read.partition, read.offset, read.timestamp_ms) == (
        reference.topic,
        reference.partition,
        reference.offset,
        reference.timestamp_ms,
    )
    assert (as_bytes(read.key), as_bytes(read.value)) == (reference.key, reference.value)
    assert [(name, as_bytes(value)) for name, value in read.headers or ()] == list(
        reference.headers
    )


def test_a_replay_sends_a_header_value_with_a_nul_as_bytes_never_as_text():
    # confluent-kafka hands a text header value to librdkafka as a C string: cut at the NUL.
    line = b'{"topic":"t","headers":[["h","ab\\u0000cd"],["g","text"]]}'

    (read,) = parse_lines_for_replay([line], source="x")

    assert list(read.headers or ()) == [("h", b"ab\x00cd"), ("g", b"text")]


def test_a_replay_refuses_a_header_name_with_a_nul_which_librdkafka_cannot_send():
    line = b'{"topic":"t","headers":[["h\\u0000n","v"]]}'

    with pytest.raises(RecordingError, match=r"x:1: a header name holds a NUL character"):
        list(parse_lines_for_replay([line], source="x"))
    assert parse_line(line.decode()).headers == (("h\x00n", b"v"),)  # read, for the driver


#: Lines whose header name is not UTF-8: bytes kcat wrote as they were (in our pairs and in
#: its flat list), a lone surrogate escape, and an escape that stands for a byte.
NAMES_NOT_UTF8 = [
    (b'{"topic":"t","headers":[["ok","1"],["\xff\xfename","v"]]}', "b'\\xff\\xfename'"),
    (b'{"topic":"t","broker":1,"headers":["\xff\xfename","v"],"key":"k"}', "b'\\xff\\xfename'"),
    (b'{"topic":"t","headers":[["\xe9",{"base64":"AA=="}]]}', "b'\\xe9'"),
    (b'{"topic":"t","headers":[["\\ud800x","v"]]}', "'\\ud800x'"),
    (b'{"topic":"t","headers":[["\\udcffx","v"]]}', "b'\\xffx'"),
]


@pytest.mark.parametrize(("line", "shown"), NAMES_NOT_UTF8)
def test_a_replay_refuses_a_header_name_that_is_not_utf8_which_confluent_kafka_cannot_send(
    line, shown
):
    # confluent-kafka encodes a text name as UTF-8 and crashes the process (SIGSEGV) on one
    # that cannot be; given bytes, it sends their repr ("b'...'") as the name.
    says = f"x:3: the header name {shown} is not UTF-8 text, which Kafka's Python client"
    # The router's check (message_for_replay) and the sending loop's inlined fast path.
    with pytest.raises(RecordingError) as routed:
        message_for_replay(line, "x", 3)
    with pytest.raises(RecordingError) as read:
        list(parse_numbered_lines_for_replay([(1, b"\n"), (3, line)], source="x"))
    assert str(routed.value).startswith(says) and str(read.value) == str(routed.value)
    with pytest.raises(RecordingError, match=r"^x:1: the header name"):
        list(parse_lines_for_replay([line], source="x"))
    assert len(list(parse_lines([line], source="x"))) == 1  # read, for the test driver


@pytest.mark.parametrize(
    "line",
    [
        '{"topic":"t","headers":[["café","v"]]}',  # the fast path
        '{"topic":"t","headers":[["café",{"base64":"/w=="}]]}',  # the fast path, with base64
        '{"topic":"t","headers":["café","v"]}',  # kcat's flat headers: the careful path
        '{"topic":"t","headers":[["caf\\u00e9","\\udcff"]]}',  # escapes: the careful path
    ],
)
def test_a_replay_sends_a_header_name_that_is_utf8_text_whatever_the_path(line):
    (read,) = parse_lines_for_replay([line.encode()], source="x")
    assert [name for name, _ in read.headers or ()] == ["café"]
    assert message_for_replay(line.encode(), "x", 1) is not None


@pytest.mark.parametrize(
    "line",
    [
        '{"topic":""}',
        '{"topic":"t","tstype":"later"}',
        '{"topic":"t","key":{"base64":"***"}}',
        '{"topic":"t","key":{"base64":"AA==","extra":1}}',
        '{"topic":"t","partition":1.5}',
        '{"topic":"t","headers":[["a","b","c"]]}',
        '{"topic":"t","payload":"\\ud800"}',
        # JSON's true and false are not whole numbers here, though Python's bool is an int.
        '{"topic":"t","partition":true}',
        '{"topic":"t","offset":false}',
        '{"topic":"t","ts":true,"key":{"base64":"AA=="}}',
    ],
)
def test_reading_a_file_refuses_what_parse_line_refuses_in_the_same_words(line):
    with pytest.raises(RecordingError) as reference:
        parse_line(line, where="x:1")
    for parse in (parse_lines, parse_lines_for_replay):
        with pytest.raises(RecordingError) as read:
            list(parse([line.encode()], source="x"))
        assert str(read.value) == str(reference.value)


def test_encode_line_is_format_line_in_utf8():
    message = RecordedMessage("t", 0, 0, "ключ".encode(), b"\xff", (("h", None),))
    assert encode_line(message) == format_line(message).encode("utf-8")


def test_bytes_kcat_wrote_raw_into_its_json_are_read_back_exactly(tmp_path):
    # kcat -J copies a key, payload or header value that is not UTF-8 into its JSON string
    # byte for byte, so its output is not UTF-8 text.
    capture = tmp_path / "capture.json"
    capture.write_bytes(
        b'{"topic":"t","partition":0,"offset":0,"tstype":"create","ts":1,"broker":1,'
        b'"headers":["bin","\xfe\\u0001","empty",null],"key":"\xff\\u0000k","payload":"\x80\x81bin"}\n'
        b"\n"
        b'{"topic":"t","partition":1,"offset":0,"tstype":"create","ts":2,"broker":1,'
        b'"key":null,"payload":"caf\xc3\xa9"}\n'
    )
    first, second = read_recording(capture)
    assert first.key == b"\xff\x00k"
    assert first.value == b"\x80\x81bin"
    assert first.headers == (("bin", b"\xfe\x01"), ("empty", None))
    assert second.key is None and second.value == "café".encode()


def test_a_lone_surrogate_that_is_not_a_byte_is_refused():
    with pytest.raises(RecordingError, match="lone surrogate"):
        parse_line('{"topic": "t", "payload": "\\ud800"}')


def test_a_bad_line_in_a_file_is_named_by_its_number(tmp_path):
    recording = tmp_path / "r.ndjson"
    recording.write_text(format_line(RecordedMessage("t", 0, 0, b"k", b"v")) + "\n{oops\n")
    messages = read_recording(recording)
    assert next(messages).key == b"k"
    with pytest.raises(RecordingError, match=r"r\.ndjson:2: not a recorded message"):
        next(messages)


def test_a_missing_file_is_a_recording_error(tmp_path):
    with pytest.raises(RecordingError, match="no recording at"):
        list(read_recording(tmp_path / "absent.ndjson"))


def test_a_path_through_a_file_or_a_name_too_long_is_a_recording_error(tmp_path):
    # NotADirectoryError and ENAMETOOLONG were tracebacks.
    (tmp_path / "in.ndjson").write_text("")

    with pytest.raises(RecordingError, match=r"^no recording at .*in\.ndjson/rec\.jsonl: a part"):
        list(read_recording(tmp_path / "in.ndjson" / "rec.jsonl"))
    with pytest.raises(RecordingError, match=r"^cannot read .*a{300}: File name too long$"):
        list(read_recording_for_replay(tmp_path / ("a" * 300)))


def test_a_read_that_fails_part_way_is_a_recording_error_naming_the_file():
    # An I/O error while the lines are read (a failing disk; here a file Linux refuses to read
    # at offset 0) was a traceback of `pipeline replay`.
    with pytest.raises(RecordingError, match=r"^cannot read /proc/self/mem: Input/output error$"):
        list(read_recording_for_replay(Path("/proc/self/mem")))


def test_a_line_longer_than_the_bound_is_a_recording_error_not_all_memory(tmp_path, monkeypatch):
    # A file with no line break (a disk image, /dev/zero) was read whole in search of its
    # first line, until the kernel killed the replay (an outside re-check). The bound is
    # MAX_LINE_BYTES; a smaller one here, to spare the test's memory.
    monkeypatch.setattr(recording.bounded_lines, "__defaults__", (1 << 20,))
    image = tmp_path / "image.bin"
    image.write_bytes(b"\0" * (3 << 20))

    with pytest.raises(RecordingError, match=r"image\.bin: a line longer than 1,048,576 bytes"):
        list(read_recording_for_replay(image))
    assert recording.MAX_LINE_BYTES == 256 << 20


def test_bounded_lines_give_every_line_as_it_is_and_read_what_a_pipe_has():
    text = b"".join(b"x" * n + b"\n" for n in (0, 5, 1 << 20, 3)) + b"tail"
    stream = io.BufferedReader(io.BytesIO(text), buffer_size=7)

    lines = list(bounded_lines(stream, "stdin", limit=(1 << 20) + 1))

    assert lines == text.splitlines(keepends=True)


def test_parse_lines_reads_raw_lines_and_names_the_source():
    lines = [format_line(RecordedMessage("t", 0, n, None, b"v")).encode() + b"\n" for n in range(2)]
    assert [m.offset for m in parse_lines([*lines, b"  \n"], source="stdin")] == [0, 1]
    with pytest.raises(RecordingError, match=r"^stdin:2: "):
        list(parse_lines([lines[0], b"[1]\n"], source="stdin"))


def test_the_writer_writes_one_line_per_message_and_counts_them():
    stream = io.BytesIO()
    writer = RecordingWriter(stream)
    messages = [RecordedMessage("t", 0, n, b"k", b"\n") for n in range(3)]
    writer.write_all(messages)
    assert writer.count == 3
    assert [parse_line(line) for line in stream.getvalue().decode().splitlines()] == messages


BLANK_LINES = [b"\n", b'{"topic":"a"}\n', b"  \t\n", b"\r\n", b'{"topic":"b"}\r\n', b"\n", b"x\n"]


def test_blank_lines_are_skipped_by_every_reader_and_still_counted_in_line_numbers():
    # docs/replay.md: a blank line (empty or only spaces) is no message and is skipped; the
    # numbers in errors count it, as an editor does.
    for read in (parse_lines, parse_lines_for_replay):
        messages = read(BLANK_LINES, source="r.ndjson")
        assert [next(messages).topic, next(messages).topic] == ["a", "b"]
        with pytest.raises(RecordingError, match=r"^r\.ndjson:7: "):
            next(messages)


def test_the_format_page_says_what_a_blank_line_is():
    page = (Path(__file__).resolve().parents[4] / "docs" / "replay.md").read_text()
    assert "A blank line (empty, or only spaces) is skipped" in page
    assert "every line must be a message" not in page  # blank lines are not


@pytest.mark.parametrize(
    "cut",
    [
        '{"topic":"t"\n',  # after a closed string
        '{"topic":"t","ts":17966661\n',  # inside a number
        '{"topic":"t","payload":\n',  # before a value
        '{"topic":"t","partition":1\r\n',  # CRLF
        '{"topic":"t","partition":1',  # the last line, without a newline
    ],
)
def test_a_line_cut_short_outside_a_string_is_said_so_in_words(tmp_path, cut):
    # An outside re-check: 'Expecting ',' delimiter at column 33' for a line of 32 characters
    # (34 with a newline, 35 with CRLF): a column past the line's end, and no word of a cut.
    recording = tmp_path / "r.ndjson"
    recording.write_text(format_line(RecordedMessage("t", 0, 0, b"k", b"v")) + "\n" + cut)
    messages = read_recording(recording)
    next(messages)
    with pytest.raises(RecordingError) as refused:
        next(messages)
    assert str(refused.value) == (
        f"{recording}:2: not a recorded message (the line ends before its JSON does: cut short?)"
    )


def test_a_string_path_reads_as_a_path_does(tmp_path):
    recording = tmp_path / "r.ndjson"
    recording.write_text(format_line(RecordedMessage("t", 0, 0, b"k", b"v")) + "\n")

    assert list(read_recording(str(recording))) == list(read_recording(recording))


#: A line as `pipeline record` writes it, its payload JSON text (escaped quotes in it).
WHOLE = format_line(
    RecordedMessage("orders", 0, 7, b"o-7", '{"order_id": "o-7", "note": "café"}'.encode())
)
#: The line cut inside a string: in "café"; and right after a backslash (of \"o-7\").
IN_A_STRING = WHOLE[: WHOLE.index("caf") + 3]
AFTER_A_BACKSLASH = WHOLE[: WHOLE.index('\\"o-7') + 1]


@pytest.mark.parametrize(
    "text",
    [
        # json: "Invalid control character at" (the newline)
        pytest.param(f"{WHOLE}\n{IN_A_STRING}\n{WHOLE}\n", id="a-line-in-the-middle"),
        # json: "Unterminated string starting at"
        pytest.param(f"{WHOLE}\n{IN_A_STRING}", id="the-last-line-without-a-newline"),
        pytest.param(f"{WHOLE}\r\n{IN_A_STRING}\r\n{WHOLE}\r\n", id="crlf"),
        # json: "Invalid \\escape" (the backslash before the newline)
        pytest.param(f"{WHOLE}\n{AFTER_A_BACKSLASH}\n{WHOLE}\n", id="after-a-backslash"),
    ],
)
@pytest.mark.parametrize("read", [read_recording, read_recording_for_replay])
def test_a_line_cut_short_inside_a_string_is_said_so_in_words(tmp_path, text, read):
    # An outside review, of a line cut with awk: "trunc.ndjson:500: not a recorded message
    # (invalid JSON: Invalid control character at column 61)", and at the last line
    # "Unterminated string starting at column 182": the line was right, the reason obscure.
    recording = tmp_path / "trunc.ndjson"
    recording.write_bytes(text.encode())

    with pytest.raises(RecordingError) as refused:
        list(read(recording))

    assert str(refused.value) == (
        f"{recording}:2: not a recorded message (the line ends inside a string: cut short?)"
    )


def test_a_line_cut_short_in_a_unicode_escape_is_said_so_too():
    line = '{"topic":"t","payload":"caf\\u00e'  # \u00e9 cut after its 3rd digit

    with pytest.raises(RecordingError) as refused:
        parse_line(line + "\n", where="r.ndjson:3")

    assert str(refused.value) == (
        "r.ndjson:3: not a recorded message (the line ends inside a string: cut short?)"
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        # A tab inside a string, not at the end: json's reason and its column (with one "at").
        ('{"topic":"t","payload":"a\tb"}\n', "Invalid control character at column 26"),
        ('{"topic":"t","payload":"a\\qb"}\n', "Invalid \\escape at column 26"),
        ('{"topic":"t","payload":"\\u00zz"}\n', "Invalid \\uXXXX escape at column 26"),
        ('{"topic" "t"}\n', "Expecting ':' delimiter at column 10"),  # within the line
    ],
)
def test_other_invalid_json_keeps_json_s_reason_and_its_column(line, reason):
    with pytest.raises(RecordingError) as refused:
        parse_line(line, where="r.ndjson:1")

    assert str(refused.value) == f"r.ndjson:1: not a recorded message (invalid JSON: {reason})"


BOM = b"\xef\xbb\xbf"
BOM_LINES = [BOM + b'{"topic":"a","payload":"x"}\n', b'{"topic":"b"}\n']


def test_a_utf8_bom_at_the_start_of_a_recording_is_skipped_by_every_reader(tmp_path):
    # Saved by an editor that marks UTF-8 files (Notepad, PowerShell): the mark is no data.
    recording = tmp_path / "r.ndjson"
    recording.write_bytes(b"".join(BOM_LINES))
    for messages in (
        read_recording(recording),
        read_recording_for_replay(recording),
        parse_lines(BOM_LINES, source="stdin"),
        parse_lines_for_replay(BOM_LINES, source="stdin"),
        parse_numbered_lines_for_replay(enumerate(BOM_LINES, start=1), source="stdin"),
    ):
        assert [(m.topic, m.value) for m in messages] == [("a", b"x"), ("b", None)]
    first = message_for_replay(BOM_LINES[0], "r.ndjson", 1)
    assert first is not None
    assert first.topic == "a"
    [after_a_blank] = parse_lines([BOM + b"\n", b'{"topic":"b"}\n'], source="stdin")
    assert after_a_blank.topic == "b"


@pytest.mark.parametrize(
    "lines",
    [
        [b'{"topic":"a"}\n', BOM + b'{"topic":"b"}\n'],  # a later line
        [b'{"topic":"a"}' + BOM + b"\n"],  # within the first line
        [BOM + BOM + b'{"topic":"a"}\n'],  # a second one
    ],
)
def test_a_utf8_bom_anywhere_else_is_still_an_error(lines):
    for read in (parse_lines, parse_lines_for_replay):
        with pytest.raises(RecordingError, match=r"^stdin:\d: not a recorded message"):
            list(read(lines, source="stdin"))


# --- a message larger than Kafka's client sends ------------------------------------------------


def _sized_line(value_bytes, headers='[["ce_id","e-1"],["n",null]]', key='"k"'):
    return (
        f'{{"topic":"t","key":{key},"payload":"{"v" * value_bytes}","headers":{headers}}}'
    ).encode()


def test_a_replay_refuses_a_message_larger_than_kafkas_client_sends_naming_its_line():
    # Key "k", 2 headers (ce_id=e-1: 5+3+2 bytes, n=null: 1+0+2), a record's overhead 36: the
    # value may take 1,000,000 - 36 - 1 - 10 - 3 bytes.
    largest = recording.MAX_MESSAGE_BYTES - 36 - 1 - 10 - 3
    fits, too_large = _sized_line(largest), _sized_line(largest + 1)
    base64_value = json.dumps({"base64": base64.b64encode(b"\xff" * (largest + 1)).decode()})
    careful = _sized_line(0).replace(b'"payload":""', b'"payload":' + base64_value.encode())

    says = (
        r"^x:3: the message is 1,000,001 bytes \(key, value and headers\), more than the "
        r"1,000,000 Kafka's client sends in one \(librdkafka's message.max.bytes, which a "
        r"replay does not change\): take the line out of the recording, or shorten it, to "
        r"replay the rest$"
    )
    for line in (too_large, careful):  # the fast path, and the careful one (base64)
        with pytest.raises(RecordingError, match=says):
            message_for_replay(line, "x", 3)  # the check (routed lines, --speed)
        with pytest.raises(RecordingError, match=says):  # the sending loop; stdin
            list(parse_numbered_lines_for_replay([(1, b"\n"), (3, line)], source="x"))
        with pytest.raises(RecordingError, match=says.replace("x:3", "x:2")):
            list(parse_lines_for_replay([fits, line], source="x"))
        assert len(list(parse_lines([line], source="x"))) == 1  # read, for the test driver
    assert message_for_replay(fits, "x", 1) is not None
    assert len(list(parse_lines_for_replay([fits], source="x"))) == 1


@pytest.mark.parametrize(
    ("key", "headers"),
    [
        (None, ()),
        (b"k" * 100, ()),
        ("é", (("é", "ü" * 70), ("n", None))),
        (b"", tuple((f"h{i}", b"v" * i) for i in range(60))),
        (None, (("big", b"x" * 20_000),)),
    ],
)
def test_wire_size_is_what_librdkafka_holds_against_message_max_bytes(key, headers):
    from confluent_kafka import KafkaException, Producer

    # No broker: produce() refuses a message too large at once, before any connection.
    producer = Producer({"message.max.bytes": recording.MAX_MESSAGE_BYTES, "log_level": 0})

    def fits(size):
        try:
            producer.produce("t", b"v" * size, key, -1, None, None, 0, list(headers))
        except KafkaException:
            return False
        return True

    def message(size):
        return RecordedMessage("t", 0, 0, key, b"v" * size, headers)

    largest = next(n for n in range(recording.MAX_MESSAGE_BYTES, 0, -1) if fits(n))
    producer.purge()
    assert recording.wire_size(message(largest)) == recording.MAX_MESSAGE_BYTES
    assert recording.wire_size(message(largest + 1)) == recording.MAX_MESSAGE_BYTES + 1

"""A LogRecord becomes exactly the ECS document of the shared log schema."""

import json
import logging
import os
import sys

from pipeline.logs.record import (
    LABEL_KEY_MOST,
    ecs_document,
    ecs_json,
    encodable,
    unencodable_document,
)


def _record(msg="order %s placed", args=("o-1",), exc_info=None, **extra):
    record = logging.LogRecord(
        "orders.handler",
        logging.WARNING,
        "/srv/orders/handler.py",
        42,
        msg,
        args,
        exc_info,
        func="handle",
    )
    record.created = 1721044800.123456  # 2024-07-15T12:00:00.123Z
    record.process = 4321
    record.processName = "MainProcess"
    record.threadName = "worker-1"
    for name, value in extra.items():
        setattr(record, name, value)
    return record


def test_a_record_with_context_and_extras_is_the_exact_ecs_json():
    record = _record(attempt=3, event_action="retried", event_outcome="failure")
    context = {"correlation_id": "req-1", "event_id": "ev-1", "partition": 2, "offset": 17}
    document = ecs_document(
        record,
        service="orders",
        hostname="host-a",
        event_id="01900000-0000-7000-8000-000000000001",
        context=context,
    )
    assert ecs_json(document) == (
        b'{"@timestamp":"2024-07-15T12:00:00.123Z",'
        b'"log":{"level":"warning","logger":"orders.handler",'
        b'"origin":{"file":{"name":"handler.py","line":42},"function":"handle"}},'
        b'"message":"order o-1 placed",'
        b'"ecs":{"version":"8.11.0"},'
        b'"event":{"id":"01900000-0000-7000-8000-000000000001","action":"retried",'
        b'"outcome":"failure"},'
        b'"service":{"name":"orders"},'
        b'"host":{"hostname":"host-a"},'
        b'"process":{"pid":4321,"name":"MainProcess","thread":{"name":"worker-1"}},'
        b'"pipeline":{"event_id":"ev-1","correlation_id":"req-1","partition":2,"offset":17},'
        b'"labels":{"attempt":"3"}}'
    )


def test_an_exception_fills_error_type_message_and_stack_trace_redacted():
    try:
        raise ValueError("bad token=abc123")
    except ValueError:
        record = _record("failed", (), exc_info=sys.exc_info())
    document = ecs_document(record, service="s", hostname="h", event_id="e")
    error = document["error"]
    assert error["type"] == "ValueError"
    assert error["message"] == "bad token=[REDACTED]"
    assert error["stack_trace"].startswith("Traceback (most recent call last):")
    assert error["stack_trace"].endswith("ValueError: bad token=[REDACTED]")
    assert "abc123" not in json.dumps(document)


def test_an_exception_of_a_module_is_named_with_its_module():
    try:
        json.loads("{")
    except json.JSONDecodeError:
        record = _record("failed", (), exc_info=sys.exc_info())
    document = ecs_document(record, service="s", hostname="h", event_id="e")
    assert document["error"]["type"] == "json.decoder.JSONDecodeError"


def test_without_context_extras_or_exception_those_parts_are_absent():
    document = ecs_document(_record(), service="s", hostname="h", event_id="e")
    assert set(document) == {
        "@timestamp",
        "log",
        "message",
        "ecs",
        "event",
        "service",
        "host",
        "process",
    }


def test_levels_are_lower_case_names():
    record = _record()
    for level, name in [
        (logging.DEBUG, "debug"),
        (logging.INFO, "info"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "critical"),
    ]:
        record.levelno, record.levelname = level, logging.getLevelName(level)
        assert ecs_document(record, service="s", hostname="h", event_id="e")["log"]["level"] == name


def test_secret_labels_and_messages_are_redacted():
    record = _record("card %s", ("4111-1111-1111-1111",), api_key="k-123", note="pwd=x")
    document = ecs_document(record, service="s", hostname="h", event_id="e")
    assert document["message"] == "card [REDACTED]"
    assert document["labels"] == {"api_key": "[REDACTED]", "note": "pwd=[REDACTED]"}


def test_a_dotted_extra_name_becomes_an_underscored_label():
    # Elasticsearch reads "customer.tier" as a field inside "customer": a line with both was
    # refused as a mapping conflict and dead-lettered.
    record = _record("x", (), customer="c-1", **{"customer.tier": "gold"})
    document = ecs_document(record, service="s", hostname="h", event_id="e")
    assert document["labels"] == {"customer": "c-1", "customer_tier": "gold"}


def test_lone_surrogates_are_backslash_escaped_and_the_json_is_valid_utf8():
    # os.fsdecode keeps an undecodable byte of a file name as a lone surrogate (U+DCFF): the
    # line once failed to encode and was lost.
    name = os.fsdecode(b"report-\xff.csv")
    try:
        raise OSError(f"cannot read {name}")
    except OSError:
        record = _record("cannot open %s", (name,), exc_info=sys.exc_info(), path="\ud800x")
    document = ecs_document(record, service="s", hostname="h", event_id="e")

    parsed = json.loads(ecs_json(document).decode("utf-8"))

    assert parsed["message"] == "cannot open report-\\xff.csv"  # the byte, as it was
    assert parsed["labels"] == {"path": "\\ud800x"}  # any other surrogate: its code
    assert parsed["error"]["message"] == "cannot read report-\\xff.csv"
    assert parsed["error"]["stack_trace"].endswith("OSError: cannot read report-\\xff.csv")


def test_a_surrogate_anywhere_in_a_document_still_encodes():
    # A field ecs_document does not clean (a thread's or logger's name, a context value).
    assert ecs_json({"thread": "w\udcff", "ok": "é"}) == b'{"thread":"w\\\\xff","ok":"\xc3\xa9"}'
    assert encodable("plain é") == "plain é"


def test_a_record_whose_document_cannot_be_made_gets_a_stand_in_saying_why():
    record = _record("order %d of %s", ("o-1",))  # the arguments do not fit the format
    try:
        ecs_document(record, service="s", hostname="h", event_id="e")
    except TypeError as raised:
        error = raised
    document = unencodable_document(record, error, service="s", hostname="h", event_id="e")

    assert json.loads(ecs_json(document)) == {
        "@timestamp": "2024-07-15T12:00:00.123Z",
        "log": {"level": "warning", "logger": "orders.handler"},
        "message": "'order %d of %s' % ('o-1',)",
        "ecs": {"version": "8.11.0"},
        "event": {"id": "e"},
        "service": {"name": "s"},
        "host": {"hostname": "h"},
        "labels": {"encoding_error": "TypeError: %d format: a real number is required, not str"},
    }


def test_an_error_named_without_an_exception_fills_error_type_and_message_not_labels():
    # A dead letter's line: Kibana's "Dead letters" search shows error.type and error.message,
    # which such lines left empty.
    record = _record(
        error_type="StockCheckFailed", error_message="no stock for sku-1 password=hunter2"
    )

    document = ecs_document(record, service="s", hostname="h", event_id="e")

    assert document["error"] == {
        "type": "StockCheckFailed",
        "message": "no stock for sku-1 password=[REDACTED]",
    }
    assert "labels" not in document


class _StrBroken(Exception):
    def __str__(self):
        raise RuntimeError("str broken")


def test_an_exception_whose_str_raises_keeps_its_type_and_traceback():
    # The record was lost (a stand-in with labels.encoding_error only): the traceback, the one
    # thing such a line is for, with it.
    try:
        raise _StrBroken()
    except _StrBroken:
        record = _record("weird exc str", (), exc_info=sys.exc_info())

    error = ecs_document(record, service="s", hostname="h", event_id="e")["error"]

    assert error["type"] == f"{__name__}._StrBroken"
    assert error["message"] == "<exception str() failed>"  # as Python's traceback says
    assert error["stack_trace"].startswith("Traceback (most recent call last):")
    assert "raise _StrBroken()" in error["stack_trace"]
    assert error["stack_trace"].endswith("_StrBroken: <exception str() failed>")


def test_a_nested_extra_stays_an_object_under_labels_with_string_leaves():
    # It was its repr, "{'status': 500, 'ok': False}", which labels.http.status:500 never found
    # (labels is a flattened field: each value at any depth is found by its full path).
    captured: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = captured.append  # type: ignore[method-assign]
    log = logging.getLogger("tests.nested_extra")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("request done", extra={"http": {"status": 500, "ok": False}})
    finally:
        log.removeHandler(handler)

    document = ecs_document(captured[0], service="s", hostname="h", event_id="e")

    assert document["labels"] == {"http": {"status": "500", "ok": "False"}}
    assert b'"labels":{"http":{"status":"500","ok":"False"}}' in ecs_json(document)


def test_nested_keys_lists_and_tuples_are_made_as_top_level_labels_are():
    record = _record(
        "x",
        (),
        order={
            "customer.tier": "gold",  # a dot: "_", as in a top-level name
            7: None,  # a key that is no string: its str()
            "lines": [{"sku": "s-1", "qty": 2}, 3.5, ["a", b"b"]],
            "span": (1, 2),
            "_private": "kept",  # only the record's own _attributes are skipped
            "empty": {},
        },
    )

    labels = ecs_document(record, service="s", hostname="h", event_id="e")["labels"]

    assert labels == {
        "order": {
            "customer_tier": "gold",
            "7": "None",
            "lines": [{"sku": "s-1", "qty": "2"}, "3.5", ["a", "b'b'"]],
            "span": ["1", "2"],
            "_private": "kept",
            "empty": {},
        }
    }


def test_label_keys_elasticsearch_refuses_are_mended_and_other_containers_keep_their_str():
    class Settings(dict):  # a mapping whose own str() hides what it holds
        def __repr__(self) -> str:
            return "Settings(<hidden>)"

    record = _record(
        "x",
        (),
        conn=Settings(dsn="host=db password=hunter2"),
        d={"a\x00b": "v", "k" * 1000: "long"},
    )

    labels = ecs_document(record, service="s", hostname="h", event_id="e")["labels"]

    assert labels["conn"] == "Settings(<hidden>)"
    # A flattened field refuses a NUL in a key, and a key past Lucene's term limit.
    assert labels["d"] == {"a\ufffdb": "v", "k" * LABEL_KEY_MOST: "long"}


def test_secrets_and_card_numbers_in_nested_labels_are_redacted():
    record = _record(
        "x",
        (),
        request={
            "headers": {"Authorization": "Bearer eyJ.abc", "accept": "json"},
            "db": {"password": "hunter2", "host": "db-1"},
            "api": {"key": "k-123"},  # labels.request.api.key: as secret as api_key
            "credentials": {"user": "bob", "pin": "1234"},  # a secret name masks it whole
            "note": "retry with token=t-9",
            "cards": ["4111 1111 1111 1111", "order 42"],
            "by_card": {"4111111111111111": "declined"},  # a card number as a key
        },
    )

    document = ecs_document(record, service="s", hostname="h", event_id="e")

    assert document["labels"] == {
        "request": {
            "headers": {"Authorization": "[REDACTED]", "accept": "json"},
            "db": {"password": "[REDACTED]", "host": "db-1"},
            "api": {"key": "[REDACTED]"},
            "credentials": "[REDACTED]",
            "note": "retry with token=[REDACTED]",
            "cards": ["[REDACTED]", "order 42"],
            "by_card": {"[REDACTED]": "declined"},
        }
    }
    text = ecs_json(document)
    for secret in (b"eyJ.abc", b"hunter2", b"k-123", b"bob", b"t-9", b"4111"):
        assert secret not in text


def test_an_extra_that_contains_itself_or_nests_too_deep_becomes_its_str_there():
    loop: dict[str, object] = {"a": 1}
    loop["self"] = loop
    items: list[object] = ["x"]
    items.append(items)
    deep: dict[str, object] = {"leaf": 1}
    for key in "ihgfedcba":
        deep = {key: deep}

    labels = ecs_document(
        _record("x", (), loop=loop, items=items, deep=deep, two={"x": [1]}),
        service="s",
        hostname="h",
        event_id="e",
    )["labels"]

    assert labels["loop"] == {"a": "1", "self": "{'a': 1, 'self': {...}}"}
    assert labels["items"] == ["x", "['x', [...]]"]
    level = labels["deep"]  # labels.deep and deep.a ... deep.a.b.c.d.e.f.g: 8 objects
    for key in "abcdefg":
        level = level[key]
    assert level == {"h": "{'i': {'leaf': 1}}"}  # the 9th level: its str()
    assert labels["two"] == {"x": ["1"]}  # the same object twice is no loop
    json.loads(ecs_json({"labels": labels}))


def test_label_keys_made_alike_keep_every_value():
    record = _record("x", (), ids={1: "int", "1": "str"}, m={"a.b": "dot", "a_b": "under"})
    record.__dict__["customer.tier"] = "gold"
    record.__dict__["customer_tier"] = "silver"

    labels = ecs_document(record, service="s", hostname="h", event_id="e")["labels"]

    assert labels["ids"] == {"1": "int", "1_2": "str"}
    assert labels["m"] == {"a_b": "dot", "a_b_2": "under"}
    assert {labels["customer_tier"], labels["customer_tier_2"]} == {"gold", "silver"}


def test_secrets_in_name_value_pairs_and_command_lines_are_redacted():
    record = _record(
        "x",
        (),
        headers=[("Authorization", "Basic dXNlcjpwYXNz"), ("X-Api-Key", "k-777"), ("Accept", "*")],
        argv=["psql", "--password", "cli-pw-1", "-h", "db"],
        cards={"4111111111111111": "a", "5500005555555559": "b"},
    )

    labels = ecs_document(record, service="s", hostname="h", event_id="e")["labels"]

    assert labels["headers"] == [
        ["Authorization", "[REDACTED]"],
        ["X-Api-Key", "[REDACTED]"],
        ["Accept", "*"],
    ]
    assert labels["argv"] == ["psql", "--password", "[REDACTED]", "-h", "db"]
    assert sorted(labels["cards"].values()) == ["a", "b"]  # both kept, their keys masked
    assert "4111111111111111" not in str(labels)

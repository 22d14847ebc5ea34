"""--since parsing and the query sent to Elasticsearch."""

import json
from datetime import UTC, datetime

import pytest
from elasticsearch import SerializationError

from pipeline.logs.search import (
    build_query,
    invalid_query_reason,
    moment_of,
    normalize_levels,
    parse_since,
    search_body,
    shard_failure,
    shown_of_total,
    unreadable_answer,
)

NOW = datetime(2024, 7, 15, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", datetime(2024, 7, 15, 11, 45, tzinfo=UTC)),
        ("-15m", datetime(2024, 7, 15, 11, 45, tzinfo=UTC)),  # as `pipeline record` takes it
        ("90s", datetime(2024, 7, 15, 11, 58, 30, tzinfo=UTC)),
        ("2h", datetime(2024, 7, 15, 10, 0, tzinfo=UTC)),
        ("1d", datetime(2024, 7, 14, 12, 0, tzinfo=UTC)),
        ("1w", datetime(2024, 7, 8, 12, 0, tzinfo=UTC)),
        ("1h30m", datetime(2024, 7, 15, 10, 30, tzinfo=UTC)),
        ("2024-07-15T10:00:00Z", datetime(2024, 7, 15, 10, 0, tzinfo=UTC)),
        ("2024-07-15T12:00:00+02:00", datetime(2024, 7, 15, 10, 0, tzinfo=UTC)),
    ],
)
def test_since_accepts_durations_and_iso_times(text, expected):
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["", "15", "m15", "yesterday", "15 minutes", "--15m", "+15m"])
def test_since_refuses_anything_else_saying_what_is_accepted(text):
    with pytest.raises(ValueError, match="expected a duration such as 15m"):
        parse_since(text, now=NOW)


def test_the_query_combines_lucene_with_exact_filters():
    query = build_query(
        "message:timeout AND NOT log.logger:noisy",
        since=datetime(2024, 7, 15, 11, 45, tzinfo=UTC),
        service="orders",
        levels=["error", "CRITICAL"],
        correlation_id="req-1",
    )
    assert query == {
        "bool": {
            "must": [
                {
                    "query_string": {
                        "query": "message:timeout AND NOT log.logger:noisy",
                        "default_operator": "AND",
                    }
                }
            ],
            "filter": [
                {"range": {"@timestamp": {"gte": "2024-07-15T11:45:00.000Z"}}},
                {"term": {"service.name": "orders"}},
                {"terms": {"log.level": ["error", "critical"]}},
                {"term": {"pipeline.correlation_id": "req-1"}},
            ],
        }
    }


def test_a_star_or_empty_query_with_no_filter_matches_all():
    assert build_query("*") == {"match_all": {}}
    assert build_query("") == {"match_all": {}}
    assert build_query(None, service="s") == {"bool": {"filter": [{"term": {"service.name": "s"}}]}}


def test_levels_accept_commas_aliases_and_refuse_unknown():
    assert normalize_levels(["ERROR,warn", "fatal", "error"]) == ["error", "warning", "critical"]
    with pytest.raises(ValueError, match="unknown level 'loud'"):
        normalize_levels(["loud"])


def test_the_body_sorts_newest_first_or_oldest_first_with_a_tie_breaker():
    body = search_body({"match_all": {}}, size=10)
    assert body["sort"] == [{"@timestamp": {"order": "desc"}}, {"event.id": {"order": "desc"}}]
    assert search_body({"match_all": {}}, size=5, oldest_first=True)["sort"][0] == {
        "@timestamp": {"order": "asc"}
    }


def test_the_body_counts_matches_beyond_what_it_shows_unless_told_not_to():
    assert search_body({"match_all": {}}, size=100)["track_total_hits"] == 10_000
    # at the highest --limit, one more than shown: a cut there is seen too
    assert search_body({"match_all": {}}, size=10_000)["track_total_hits"] == 10_001
    assert search_body({"match_all": {}}, size=100, count=False)["track_total_hits"] is False


@pytest.mark.parametrize(
    ("total", "shown", "line"),
    [
        ({"value": 40_000, "relation": "eq"}, 3, "showing 3 of 40,000 matches; "
         "raise --limit or narrow the query"),
        ({"value": 10_000, "relation": "gte"}, 100, "showing 100 of 10,000 or more matches; "
         "raise --limit or narrow the query"),
        ({"value": 10_001, "relation": "gte"}, 10_000, "showing 10,000 of 10,001 or more "
         "matches; narrow the query"),
        ({"value": 3, "relation": "eq"}, 3, None),
        ({"value": 0, "relation": "eq"}, 0, None),
        (None, 3, None),
    ],
)  # fmt: skip
def test_a_cut_says_how_many_of_how_many_and_all_shown_says_nothing(total, shown, line):
    assert shown_of_total(total, shown, most=10_000) == line


_ANSWER = (
    b'{"hits":{"hits":[{"_index":"pipeline-logs-2026.12.05","_id":"a","_source":{}},'
    b'{"_index":"pipeline-logs-2026.12.05","_id":"c","_source":\xef\xbb\xbf{"message":"m"}}]}}'
)


def _decode_error(raw):
    try:
        json.loads(raw)
    except json.JSONDecodeError as error:
        return error
    raise AssertionError("it parsed")


def test_an_unreadable_answer_names_the_document_and_its_byte_order_mark():
    error = SerializationError("Unable to deserialize as JSON", errors=(_decode_error(_ANSWER),))

    assert unreadable_answer(error).startswith(
        "matching document c in index pipeline-logs-2026.12.05 (its source starts with a UTF-8 "
        "byte order mark) cannot be read back from Elasticsearch"
    )


def test_an_unreadable_answer_raised_again_without_its_errors_still_names_the_document():
    # elasticsearch-py 8.19 raises it again with errors=(), the parser's error as its context.
    try:
        try:
            json.loads(_ANSWER)
        except json.JSONDecodeError:
            raise SerializationError("Unable to deserialize as JSON")  # noqa: B904
    except SerializationError as raised:
        error = raised
    assert "matching document c in index" in unreadable_answer(error)


def test_an_unreadable_answer_without_a_parser_error_is_still_one_sentence():
    assert unreadable_answer(SerializationError("Unable to deserialize")).startswith(
        "a matching document cannot be read back from Elasticsearch"
    )


def test_a_query_some_shards_could_not_parse_is_a_bad_query_not_no_matches():
    # Elasticsearch answers 200 when only some shards failed (the query fails against one
    # day's index): the search said "no log lines ... match" for a query with a typo.
    answer = {
        "_shards": {
            "total": 3,
            "successful": 2,
            "failed": 1,
            "failures": [
                {
                    "shard": 0,
                    "index": "pipeline-logs-2026.12.05",
                    "reason": {
                        "type": "query_shard_exception",
                        "reason": "Failed to parse query [message:(]",
                        "caused_by": {"type": "parse_exception", "reason": "Encountered <EOF>"},
                    },
                }
            ],
        },
        "hits": {"hits": [], "total": {"value": 0, "relation": "eq"}},
    }

    assert shard_failure(answer) == (
        "Failed to parse query [message:(]: Encountered <EOF>",
        True,
    )
    other = {"_shards": {"failures": [{"reason": {"type": "node_disconnected", "reason": "x"}}]}}
    assert shard_failure(other) == ("x", False)
    assert shard_failure({"_shards": {"total": 1, "failed": 0}}) is None


@pytest.mark.parametrize("given", [[""], ["info,,error"], [" "]])
def test_an_empty_level_is_refused_not_read_as_every_level(given):
    with pytest.raises(ValueError, match="unknown level ''"):
        normalize_levels(given)


def test_an_invalid_query_reason_is_one_line_without_java_class_names():
    answer = {
        "valid": False,
        "explanations": [
            {
                "index": "pipeline-logs-2026.12.05",
                "valid": False,
                "error": "[pipeline-logs-2026.12.05/lD7n] org.elasticsearch.index.query."
                "QueryShardException: Failed to parse query [message:(]; org.apache.lucene."
                "queryparser.classic.ParseException: Cannot parse 'message:(': Encountered "
                '"<EOF>" at line 1, column 9.\nWas expecting one of:\n    <NOT> ...',
            }
        ],
    }

    assert invalid_query_reason(answer) == (
        "Failed to parse query [message:(]; Cannot parse 'message:(': Encountered \"<EOF>\" at "
        "line 1, column 9."
    )
    assert invalid_query_reason({"valid": True}) is None


@pytest.mark.parametrize(
    ("since", "sent"),
    [
        ("500000d", "0655-08-02T12:00:00.000Z"),  # strftime's %Y wrote "655": refused by ES
        ("0001-01-01T00:00", "0001-01-01T00:00:00.000Z"),
        ("2024-07-15T10:00:00.5Z", "2024-07-15T10:00:00.500Z"),
    ],
)
def test_the_time_filter_gives_every_year_in_four_digits(since, sent):
    query = build_query(since=parse_since(since, now=NOW))

    assert query == {"bool": {"filter": [{"range": {"@timestamp": {"gte": sent}}}]}}


def test_a_hits_time_in_epoch_milliseconds_is_read_not_replaced_by_the_default():
    default = datetime(2000, 1, 1, tzinfo=UTC)
    hit = {"_source": {"@timestamp": 1_796_644_800_000}}
    assert moment_of(hit, default) == datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert moment_of({"_source": {"@timestamp": "soon"}}, default) == default

"""--since parsing and the query sent to Elasticsearch."""

from datetime import UTC, datetime

import pytest

from pipeline.logs.search import build_query, normalize_levels, parse_since, search_body

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


@pytest.mark.parametrize("text", ["", "15", "m15", "yesterday", "15 minutes"])
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

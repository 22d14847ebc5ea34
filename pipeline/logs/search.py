"""What ``pipeline logs search`` asks Elasticsearch: pure query building, no I/O.

- :func:`parse_since` reads ``--since``: a duration back from now (``90s``, ``15m``, ``2h``,
  ``7d``, ``1w``, or combined like ``1h30m``) or an ISO 8601 time (``2024-07-15T12:00:00Z``);
- :func:`build_query` combines a Lucene query (``query_string``, the syntax of Kibana's
  search bar: ``message:timeout AND NOT log.level:debug``) with exact filters for the time, the
  service, the levels and the correlation id;
- :func:`search_body` adds the sort (newest first, or oldest first to follow), the size and how
  far Elasticsearch counts the matches; :func:`later_than` tells ``--follow`` which lines were
  there already up to the oldest one shown (in that sort order, ties of ``@timestamp`` too);
- :func:`shown_of_total` says when more lines matched than ``--limit`` let through, and
  :func:`unreadable_answer` what to tell of an answer whose JSON does not parse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.logs.elasticsearch import reason_of
from pipeline.logs.timestamps import parse_timestamp

__all__ = [
    "LEVELS",
    "build_query",
    "later_than",
    "moment_of",
    "parse_since",
    "search_body",
    "shard_failure",
    "shown_of_total",
    "unreadable_answer",
]

LEVELS = ("debug", "info", "warning", "error", "critical")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:(\d+)([smhdw]))+")
_PART = re.compile(r"(\d+)([smhdw])")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """The UTC time ``--since TEXT`` means; :class:`ValueError` saying what is accepted.

    An ISO 8601 time without an offset is UTC (as the table's times are, and as Elasticsearch
    reads a date without one), not the host's local time: ``2026-12-06T11:30`` is 11:30 UTC."""
    # "-15m" too, as `pipeline record --from-time` writes a time back from now.
    value = text.strip().lower().removeprefix("-")
    if _DURATION.fullmatch(value):
        seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(value))
        try:
            return (now or datetime.now(UTC)).astimezone(UTC) - timedelta(seconds=seconds)
        except OverflowError:  # further back than the year 1
            raise ValueError(f"--since {text!r}: further back than a date can be") from None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected a duration such as 15m, 2h, 1d, 1h30m "
            "or an ISO 8601 time such as 2024-07-15T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    # The year by hand: strftime's %Y does not zero-pad one before 1000 ("657-12-23"), which
    # Elasticsearch refuses to parse; it wants four digits.
    moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-"
        + moment.strftime("%m-%dT%H:%M:%S.")
        + f"{moment.microsecond // 1000:03d}Z"
    )


def normalize_levels(levels: Sequence[str]) -> list[str]:
    """``["ERROR", "warn,critical"]`` -> ``["error", "warning", "critical"]``; checked."""
    result: list[str] = []
    for entry in levels:
        for part in entry.split(","):
            level = part.strip().lower()
            level = {"warn": "warning", "fatal": "critical"}.get(level, level)
            if level not in LEVELS:  # an empty one too: --level '' named no level
                raise ValueError(
                    f"unknown level {part.strip()!r}: expected one of {', '.join(LEVELS)}"
                )
            if level not in result:
                result.append(level)
    return result


def build_query(
    query: str | None = None,
    *,
    since: datetime | None = None,
    service: str | None = None,
    levels: Sequence[str] = (),
    correlation_id: str | None = None,
    up_to: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """The ``query`` of a search: the Lucene ``query`` (scored) plus exact filters; ``up_to``:
    only lines at or before the one with these sort values (:func:`later_than`)."""
    filters: list[dict[str, Any]] = []
    if up_to:
        filters.append({"bool": {"must_not": [later_than(up_to)]}})
    if since is not None:
        filters.append({"range": {"@timestamp": {"gte": _iso(since)}}})
    if service:
        filters.append({"term": {"service.name": service}})
    wanted = normalize_levels(levels)
    if wanted:
        filters.append({"terms": {"log.level": wanted}})
    if correlation_id:
        filters.append({"term": {"pipeline.correlation_id": correlation_id}})
    text = (query or "").strip()
    must: list[dict[str, Any]] = []
    if text and text != "*":
        # Kibana's Lucene mode: every field unless named, AND/OR/NOT, wildcards, ranges.
        must.append({"query_string": {"query": text, "default_operator": "AND"}})
    if not must and not filters:
        return {"match_all": {}}
    boolean: dict[str, Any] = {}
    if must:
        boolean["must"] = must
    if filters:
        boolean["filter"] = filters
    return {"bool": boolean}


_JAVA_EXCEPTION = re.compile(r"^(?:\[[^\]]*\] )?(?:[a-z]+\.)+[A-Za-z]*(?:Exception|Error): ")


def invalid_query_reason(answer: Mapping[str, Any]) -> str | None:
    """Why Elasticsearch's ``_validate/query`` answer (with ``explain``) refuses the query, on
    one line without its Java class names; ``None`` for a valid one."""
    if answer.get("valid", True):
        return None
    for explanation in answer.get("explanations") or []:
        error = explanation.get("error") if isinstance(explanation, Mapping) else None
        if isinstance(error, str) and error:
            parts = [_JAVA_EXCEPTION.sub("", part) for part in error.split("\n", 1)[0].split("; ")]
            return "; ".join(part for part in parts if part)
    return "Elasticsearch cannot parse it"


#: Elasticsearch counts matches exactly up to this many by default, and reports a lower bound
#: beyond (``"relation": "gte"``). Counting every match (``track_total_hits: true``) would
#: visit every matching document of a day's index for a line that only needs to say "more".
_COUNTED_MATCHES = 10_000


def search_body(
    query: dict[str, Any], *, size: int, oldest_first: bool = False, count: bool = True
) -> dict[str, Any]:
    """The search request body: newest first (or oldest first), ties broken by ``event.id``.

    ``count``: the matches are counted exactly up to 10,000, and at least one beyond ``size``
    (so a cut at ``--limit 10000`` is seen too); without, not at all (``--follow``'s polls).
    """
    order = "asc" if oldest_first else "desc"
    return {
        "query": query,
        "size": size,
        "sort": [{"@timestamp": {"order": order}}, {"event.id": {"order": order}}],
        "track_total_hits": max(_COUNTED_MATCHES, size + 1) if count else False,
    }


def later_than(sort_values: Sequence[Any]) -> dict[str, Any]:
    """A filter for the lines after the one whose sort values (:func:`search_body`'s:
    ``@timestamp`` in epoch milliseconds, then ``event.id``) are ``sort_values``.

    ``--follow`` after a cut goes on from the oldest line shown. A time alone cannot say where
    that is: lines shipped in one bulk share a millisecond, and those of them left out of the
    first page were printed by the first poll, older than the lines already shown. The
    tiebreaker can: in one millisecond, a line with a higher ``event.id`` is later (a line
    without one sorts last newest first, so it is before every line that has one)."""
    millis = sort_values[0]
    later: list[dict[str, Any]] = [
        {"range": {"@timestamp": {"gt": millis, "format": "epoch_millis"}}}
    ]
    event_id = sort_values[1] if len(sort_values) > 1 else None
    if event_id is not None:
        same_moment = {
            "range": {"@timestamp": {"gte": millis, "lte": millis, "format": "epoch_millis"}}
        }
        later.append({"bool": {"filter": [same_moment, {"range": {"event.id": {"gt": event_id}}}]}})
    return {"bool": {"should": later, "minimum_should_match": 1}}


def moment_of(hit: Mapping[str, Any], default: datetime) -> datetime:
    """The ``@timestamp`` of a search hit, or ``default`` (in UTC) when it has none it reads."""
    moment = parse_timestamp((hit.get("_source") or {}).get("@timestamp"))
    return moment if moment is not None else default.astimezone(UTC)


def shown_of_total(total: Any, shown: int, *, most: int) -> str | None:
    """One line when more lines matched than the ``shown`` ones (``total`` is the answer's
    ``hits.total``), ``None`` when every match was shown or the total is unknown; ``most`` is
    the highest ``--limit``."""
    if not isinstance(total, Mapping) or not isinstance(total.get("value"), int):
        return None
    value: int = total["value"]
    if value <= shown:  # every match shown (a lower bound this low does not happen: see above)
        return None
    matched = f"{value:,} or more" if total.get("relation") == "gte" else f"{value:,}"
    advice = "raise --limit or narrow the query" if shown < most else "narrow the query"
    return f"showing {shown:,} of {matched} matches; {advice}"


_HIT_ID = re.compile(r'"_index"\s*:\s*"([^"]*)"\s*,\s*"_id"\s*:\s*"([^"]*)"')


def unreadable_answer(error: BaseException) -> str:
    """What to say when the search's answer is not JSON the client can read (elasticsearch-py's
    ``SerializationError``, its parser's error in ``errors``): Elasticsearch returns each
    document's source as it was indexed, so one indexed with bytes before its JSON (a UTF-8 byte
    order mark) makes the whole answer unreadable. The document is named when it can be."""
    # The parser's error is in ``errors`` as elastic-transport raises it; the client raises
    # it again without them (elastic-transport 8.19), the parser's error then its context.
    errors = getattr(error, "errors", ()) or ()
    causes = [*(errors if isinstance(errors, tuple) else ()), error.__cause__, error.__context__]
    cause = next((c for c in causes if isinstance(c, json.JSONDecodeError)), None)
    name = "a matching document"
    if cause is not None:
        found = _HIT_ID.findall(cause.doc, 0, cause.pos)
        if found:
            index, doc_id = found[-1]
            name = f"matching document {doc_id} in index {index}"
        if cause.doc[cause.pos : cause.pos + 1] == "\ufeff":
            name += " (its source starts with a UTF-8 byte order mark)"
    return (
        f"{name} cannot be read back from Elasticsearch (its source is not valid JSON), so "
        "this search shows nothing; narrow the query or --since to leave it out"
    )


#: Shard failures that say the query itself is wrong (it fails the same on every index).
_QUERY_ERRORS = frozenset({"query_shard_exception", "parse_exception", "search_parse_exception"})


def shard_failure(response: Mapping[str, Any]) -> tuple[str, bool] | None:
    """The first shard failure of a search answer, on one line, and whether it says the query
    is wrong; ``None`` when every shard answered. Elasticsearch answers 200 with the shards
    that failed listed when only some failed (a query that cannot be parsed against one
    day's mapping fails on that day's index only): such an answer is not "no matches"."""
    shards = response.get("_shards")
    failures = shards.get("failures") if isinstance(shards, Mapping) else None
    if not failures or not isinstance(failures[0], Mapping):
        return None
    node: Any = failures[0].get("reason")
    kind = node.get("type") if isinstance(node, Mapping) else None
    return reason_of(node) or "unknown", kind in _QUERY_ERRORS

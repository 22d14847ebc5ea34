"""What ``pipeline logs search`` asks Elasticsearch: pure query building, no I/O.

- :func:`parse_since` reads ``--since``: a duration back from now (``90s``, ``15m``, ``2h``,
  ``7d``, ``1w``, or combined like ``1h30m``) or an ISO 8601 time (``2024-07-15T12:00:00Z``);
- :func:`build_query` combines a Lucene query (``query_string``, the syntax of Kibana's
  search bar: ``message:timeout AND NOT log.level:debug``) with exact filters for the time, the
  service, the levels and the correlation id;
- :func:`search_body` adds the sort (newest first, or oldest first to follow) and the size.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["LEVELS", "build_query", "parse_since", "search_body"]

LEVELS = ("debug", "info", "warning", "error", "critical")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:(\d+)([smhdw]))+")
_PART = re.compile(r"(\d+)([smhdw])")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """The UTC time ``--since TEXT`` means; :class:`ValueError` saying what is accepted."""
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
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def normalize_levels(levels: Sequence[str]) -> list[str]:
    """``["ERROR", "warn,critical"]`` -> ``["error", "warning", "critical"]``; checked."""
    result: list[str] = []
    for entry in levels:
        for part in entry.split(","):
            level = part.strip().lower()
            level = {"warn": "warning", "fatal": "critical"}.get(level, level)
            if not level:
                continue
            if level not in LEVELS:
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
) -> dict[str, Any]:
    """The ``query`` of a search: the Lucene ``query`` (scored) plus exact filters."""
    filters: list[dict[str, Any]] = []
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


def search_body(query: dict[str, Any], *, size: int, oldest_first: bool = False) -> dict[str, Any]:
    """The search request body: newest first (or oldest first), ties broken by ``event.id``."""
    order = "asc" if oldest_first else "desc"
    return {
        "query": query,
        "size": size,
        "sort": [{"@timestamp": {"order": order}}, {"event.id": {"order": order}}],
    }

"""``pipeline logs``: ship the ``logs`` topic into Elasticsearch, and search what was shipped.

``pipeline logs ship`` runs the log shipper (:mod:`consumers.log_shipper`) until SIGTERM or
Ctrl-C, then commits what Elasticsearch acknowledged and leaves the group.

``pipeline logs search QUERY`` queries the ``pipeline-logs`` alias with Lucene syntax (the same
as Kibana's search bar) plus filters; newest first as a table (stdout, fitted to the terminal:
:mod:`pipeline.cli.logs_table`), or ``--output ndjson`` (one ``_source`` a line, oldest first,
for ``jq``). ``--follow`` keeps printing new lines, oldest first, and waits out an outage. A
query Elasticsearch cannot parse is one line with its reason and exit code 2, as are an alias
with no index behind it, an answer the client cannot read, and an Elasticsearch that is not
reached or does not answer within its request timeout. When more lines matched than
``--limit``, one stderr line says how many.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.markup import escape

from pipeline.cli.checks import group_name, non_empty, positive
from pipeline.cli.console import (
    announcing_kafka,
    silence_stdout,
    stderr_console,
    stdout_console,
)
from pipeline.cli.interrupts import exit_code, signals_interrupt
from pipeline.cli.logs_table import search_table as _table
from pipeline.cli.logs_table import source_of as _source
from pipeline.errors import PipelineError
from pipeline.settings import ElasticsearchSettings, LogSettings, PipelineSettings

if TYPE_CHECKING:  # imported by the commands that use it: `pipeline --help` need not load it
    from elasticsearch import Elasticsearch

app = typer.Typer(help="Ship logs to Elasticsearch and search them.", no_args_is_help=True)

_err = stderr_console()

#: The shipper's consumer group when PIPELINE_LOGS__SHIPPER_GROUP is not set (for its help).
_DEFAULT_SHIPPER_GROUP: str = LogSettings.model_fields["shipper_group"].default
#: The service name of the shipper's own log lines (and their Kafka key).
_SHIPPER_SERVICE = "log-shipper"
#: The dead-letter producer's own size limit (see ``ship``).
_DLQ_MAX_BYTES = 64 * 1024 * 1024


def _require_topics(settings: PipelineSettings) -> None:
    """The logs topic and its dead-letter topic exist: a one-line error (and Kafka away the
    same) before shipping, rather than a shipper that waits for ever."""
    from pipeline.kafka.clients import build_admin
    from pipeline.topics.admin import require_topics

    bootstrap = settings.kafka.bootstrap_servers
    wanted = [settings.logs.topic, settings.logs.dlq_topic]
    with announcing_kafka(bootstrap):
        require_topics(build_admin(settings.kafka), wanted, bootstrap=bootstrap)


#: While following, lines up to this much older than the newest seen are asked for again
#: (a line shipped late is still printed); ids already printed are skipped.
_FOLLOW_OVERLAP = timedelta(seconds=30)
_FOLLOW_POLL_S = 1.0


@app.command()
def ship(
    ctx: typer.Context,
    group: Annotated[
        str | None,
        typer.Option(
            help="Consumer group (default: PIPELINE_LOGS__SHIPPER_GROUP, else "
            f"{_DEFAULT_SHIPPER_GROUP}).",
            callback=group_name,
        ),
    ] = None,
    start: Annotated[
        Literal["earliest", "latest"],
        typer.Option(help="Where a new group starts reading."),
    ] = "earliest",
    until_idle: Annotated[
        float | None,
        typer.Option(
            help="Stop once nothing came for this many seconds with every partition of the "
            "topic assigned here (caught up); with an error once Elasticsearch was unreachable "
            "that long, or when other members of the group kept partitions past their session "
            "timeout (for jobs and tests).",
            callback=positive,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Serve Prometheus metrics here: shipped, retried, dead-lettered, lag "
            "(default: PIPELINE_LOGS__SHIPPER_METRICS_PORT; none).",
        ),
    ] = None,
) -> None:
    """Ship the logs topic into Elasticsearch until SIGTERM or Ctrl-C.

    The logs topic is PIPELINE_LOGS__TOPIC (default logs). Documents go to
    daily indices behind the read alias PIPELINE_LOGS__INDEX_ALIAS (default
    pipeline-logs), with the record's event.id as document id (a redelivery
    overwrites). Offsets are committed only after Elasticsearch acknowledged
    everything below them; rejected records go to the dead-letter topic
    PIPELINE_LOGS__DLQ_TOPIC (default logs.dlq) with the reason in their
    headers.

    Examples:
      pipeline logs ship --metrics-port 9110     # runs all the time
      pipeline logs ship --until-idle 5          # catches up, then stops
    """
    from consumers.log_shipper import LogShipper
    from consumers.log_shipper_metrics import shipper_registry
    from pipeline.kafka.clients import build_consumer, build_producer
    from pipeline.logs.elasticsearch import build_elasticsearch
    from pipeline.logs.setup import configure_logging
    from pipeline.metrics_server import serve_metrics

    settings = ctx.obj
    assert isinstance(settings, PipelineSettings)
    # Logging first, as `pipeline process` does: with a JSON console the check's own lines
    # (connecting, an error) are JSON too. To Kafka only once the logs topic is known to be
    # there: a handler sending to a topic that is not waits its whole flush timeout at exit.
    configure_logging(settings, _SHIPPER_SERVICE, to_kafka=False, flush_on_sigterm=False)
    _require_topics(settings)
    configure_logging(settings, _SHIPPER_SERVICE, flush_on_sigterm=False)  # SIGTERM: its own
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    group_id = group or settings.logs.shipper_group
    consumer = build_consumer(
        settings.kafka,
        group_id,
        **{
            "auto.offset.reset": start,
            "client.id": f"{settings.kafka.client_id}-log-shipper",
            "session.timeout.ms": settings.logs.shipper_session_timeout_ms,
        },
    )
    # A dead letter is the record as read plus its headers: the client must not refuse one
    # that fitted the logs topic (librdkafka's own limit is about 1 MB); the DLQ topic's
    # max.message.bytes decides.
    dlq = build_producer(settings.kafka, **{"linger.ms": 5, "message.max.bytes": _DLQ_MAX_BYTES})
    try:
        with build_elasticsearch(settings.elasticsearch) as es:
            # (An http:// URL of an HTTPS port is the shipper's to refuse, once its server
            # hangs up: a check here kept a start against a stalled Elasticsearch waiting.)
            shipper = LogShipper(
                consumer,
                es,
                dlq,
                settings.logs,
                alias=settings.logs.index_alias,
                consumer_group=group_id,
                stop=stop,
                own_key=_SHIPPER_SERVICE.encode(),
                start_at_end=start == "latest",
                es_url=settings.elasticsearch.url,
            )
            port = metrics_port or settings.logs.shipper_metrics_port
            stop_serving = None
            if port is not None:
                stop_serving = serve_metrics(shipper_registry(lambda: shipper.counters), port)
            try:
                counters = shipper.run(until_idle_s=until_idle)
            finally:
                if stop_serving is not None:
                    stop_serving()
    finally:
        consumer.close()
        dlq.flush(10)
    _err.print(f"stopped: {counters.line()}")


# --- search -----------------------------------------------------------------------------------


class _Unavailable(PipelineError):
    """Elasticsearch not reached, not answering within the request timeout, or answering that
    it cannot serve for now (429, 502, 503, 504): an outage, which ``--follow`` waits out."""


#: The answers of an Elasticsearch (or of a proxy in front of one) that cannot serve for now.
_BUSY = frozenset({429, 502, 503, 504})


def _failure(error: Exception, server: ElasticsearchSettings) -> PipelineError:
    """One line for what the client raised for a request (an ``ApiError`` or a
    ``TransportError``); an outage as :class:`_Unavailable`."""
    from elasticsearch import ApiError, ConnectionTimeout, SerializationError
    from elasticsearch import ConnectionError as EsConnectionError

    from pipeline.logs.elasticsearch import (
        foreign_answer,
        not_elasticsearch,
        not_reached,
        one_line_reason,
        refusal_of,
        unanswered,
    )
    from pipeline.logs.search import unreadable_answer

    url = server.url
    if isinstance(error, SerializationError):  # its message holds the whole answer: not for a line
        # Not JSON at all: another server (one answering without a content type, read as
        # JSON); else Elasticsearch's answer, with a document whose source does not parse.
        return PipelineError(foreign_answer(url, error) or unreadable_answer(error))
    refusal = refusal_of(error)  # credentials, a privilege, the TLS handshake
    if refusal is not None:
        return PipelineError(refusal)
    if isinstance(error, ConnectionTimeout):  # accepted the connection, never answered
        return _Unavailable(unanswered(url, server.request_timeout_s))
    if isinstance(error, EsConnectionError):  # the URL without its credentials, and why
        return _Unavailable(not_reached(url, error))
    if not isinstance(error, ApiError):  # any other TransportError
        return PipelineError(f"the request to Elasticsearch failed: {' '.join(str(error).split())}")
    status = error.meta.status
    kind = _Unavailable if status in _BUSY else PipelineError
    foreign = not_elasticsearch(url, status, error.body)
    if foreign is not None:
        return kind(foreign)
    if status == 400:  # escaped by run()
        return PipelineError(f"bad query: {one_line_reason(error)}")
    return kind(f"Elasticsearch refused the search ({status}): {one_line_reason(error)}")


def _search(
    es: Elasticsearch, alias: str, body: dict[str, Any], server: ElasticsearchSettings
) -> dict[str, Any]:
    """The ``hits`` part of the answer: ``hits`` (the documents) and ``total``."""
    from elasticsearch import ApiError, TransportError

    from pipeline.logs.search import shard_failure

    try:
        response = es.search(
            index=alias,
            ignore_unavailable=True,
            allow_no_indices=True,
            **body,
        )
    except (ApiError, TransportError) as error:
        raise _failure(error, server) from None
    answer: Any = response  # ObjectApiResponse, or a test's fake: a dict
    failed = shard_failure(answer.body if hasattr(answer, "body") else answer)
    if failed is not None:
        reason, bad_query = failed
        if bad_query:
            raise PipelineError(f"bad query: {reason}")
        shards = response["_shards"]
        _err.print(
            f"warning: {shards['failed']} of {shards['total']} shards failed ({escape(reason)}): "
            "the lines shown may be incomplete"
        )
    found: dict[str, Any] = response["hits"]
    return found


#: The highest --limit (Elasticsearch's default index.max_result_window).
_MOST_LINES = 10_000


def _ndjson_line(source: Mapping[str, Any], encoding: str) -> str:
    """One document as a JSON line ``encoding`` can write: as it is when it can, else with
    every non-ASCII character as a JSON escape (``\\ud800``), which is still the same document
    for ``jq`` (a lone surrogate reads as U+FFFD there)."""
    line = json.dumps(source, ensure_ascii=False)
    try:
        line.encode(encoding)
    except UnicodeEncodeError:
        return json.dumps(source, ensure_ascii=True)
    return line


def _print(hits: list[dict[str, Any]], output: str) -> None:
    """The hits on stdout. A reader that went away (``| head``) ends the command quietly; any
    other failure to print is one line (exit code 2), not a traceback."""
    try:
        if output == "ndjson":
            encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
            lines = [_ndjson_line(_source(hit), encoding) for hit in hits]
            if lines:
                sys.stdout.write("\n".join(lines) + "\n")
                sys.stdout.flush()
        elif hits:
            console = stdout_console()
            console.print(_table(hits, console.width, console.encoding))
    except BrokenPipeError:
        silence_stdout()
        raise typer.Exit(0) from None
    except PipelineError:  # stdout refused the text: said so already (console.standard_streams)
        raise
    except Exception as error:
        raise PipelineError(
            f"cannot print the search's results: {type(error).__name__}: {error}"
        ) from None


@app.command()
def search(
    ctx: typer.Context,
    query: Annotated[
        str,
        typer.Argument(help="Lucene query, as in Kibana: 'message:timeout AND NOT log.level:info'"),
    ] = "*",
    since: Annotated[
        str,
        typer.Option(
            help="How far back: 90s, 15m (or -15m), 2h, 7d, 1h30m, or an ISO 8601 time, "
            "read as UTC unless it has an offset (2026-12-06T11:30 is 11:30 UTC; "
            "2026-12-06T11:30+01:00 is 10:30 UTC)."
        ),
    ] = "15m",
    service: Annotated[
        str | None, typer.Option(help="Only this service.name.", callback=non_empty)
    ] = None,
    level: Annotated[
        list[str] | None,
        typer.Option(help="Only these levels (repeat, or comma-separated: error,critical)."),
    ] = None,
    correlation_id: Annotated[
        str | None, typer.Option(help="Only lines of this request or saga.", callback=non_empty)
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")
    ] = False,
    output: Annotated[
        Literal["table", "ndjson"], typer.Option("--output", "-o", help="table or ndjson.")
    ] = "table",
    limit: Annotated[
        int, typer.Option(min=1, max=_MOST_LINES, help="At most this many lines.")
    ] = 100,
) -> None:
    """Search the shipped logs (alias pipeline-logs, PIPELINE_LOGS__INDEX_ALIAS).

    The table shows the newest lines first; NDJSON (one document a line) and
    --follow print oldest first. A query Elasticsearch cannot parse is one
    error line with its reason (exit code 2), as is an Elasticsearch that
    does not answer within PIPELINE_ELASTICSEARCH__REQUEST_TIMEOUT_S. --follow
    waits out an Elasticsearch that stops answering (saying so once), and
    stops on Ctrl-C (exit code 130) or SIGTERM (143).

    Examples:
      pipeline logs search timeout --since 1h --level error,critical
      pipeline logs search --correlation-id CORRELATION_ID --since 1d
      pipeline logs search --service orders-service --follow
      pipeline logs search 'message:timeout AND NOT log.logger:noisy' -o ndjson
    """
    from pipeline.logs.elasticsearch import build_elasticsearch
    from pipeline.logs.search import (
        build_query,
        normalize_levels,
        parse_since,
        search_body,
        shown_of_total,
    )

    settings = ctx.obj
    assert isinstance(settings, PipelineSettings)
    try:
        start = parse_since(since)
        levels = normalize_levels(level or [])
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    filters = {"service": service, "levels": levels, "correlation_id": correlation_id}
    with build_elasticsearch(settings.elasticsearch) as es:
        body = search_body(build_query(query, since=start, **filters), size=limit)  # type: ignore[arg-type]
        alias = settings.logs.index_alias
        found = _search(es, alias, body, settings.elasticsearch)
        hits: list[dict[str, Any]] = found["hits"]
        if not hits:
            # Elasticsearch skips the shards whose lines all fall outside --since without
            # parsing the query there: a typo would read as "nothing matched".
            _check_query(es, alias, build_query(query), settings.elasticsearch)  # the text
            # alone: with its time filter, Elasticsearch rewrites it to "match nothing" first
        if not hits and not _exists(es, alias, settings.elasticsearch):
            # Not "nothing matched": there is nothing to search (a typo in the alias, or no line
            # shipped yet). A command whose source is missing fails, as `pipeline consume` and
            # `dlq inspect` do for a missing topic: exit 0 would tell a script that all is well.
            raise PipelineError(
                f"no log index behind {alias} on Elasticsearch: is PIPELINE_LOGS__INDEX_ALIAS "
                "right, and has `pipeline logs ship` run?"
            )
        newest_first = output == "table" and not follow
        _print(hits if newest_first else list(reversed(hits)), output)
        cut = shown_of_total(found.get("total"), len(hits), most=_MOST_LINES)
        if cut is not None:
            _err.print(cut)
        if not hits and not follow:
            _err.print(f"no log lines since {start:%Y-%m-%d %H:%M:%S} UTC match")
        if follow:
            # After a cut (the newest --limit lines shown), the lines that were there already
            # up to the oldest one shown (by its time and event.id: lines of one bulk share a
            # millisecond) are never printed; lines shipped late still are (see _follow).
            after = hits[-1].get("sort") if cut is not None and hits else None
            try:
                with signals_interrupt():
                    _follow(
                        es,
                        settings.logs.index_alias,
                        query,
                        filters,
                        hits,
                        start,
                        output,
                        limit,
                        after=after,
                        server=settings.elasticsearch,
                    )
            except KeyboardInterrupt as interrupt:
                raise typer.Exit(exit_code(interrupt)) from None


def _exists(es: Elasticsearch, alias: str, server: ElasticsearchSettings) -> bool:
    """Whether an index is behind ``alias``; Elasticsearch's errors as one line each."""
    from elasticsearch import ApiError, TransportError

    try:
        return bool(es.indices.exists(index=alias, allow_no_indices=False))
    except (ApiError, TransportError) as error:
        raise _failure(error, server) from None


def _check_query(
    es: Elasticsearch, alias: str, query: dict[str, Any], server: ElasticsearchSettings
) -> None:
    """A query Elasticsearch cannot parse is a :class:`PipelineError` with its reason; an
    Elasticsearch that is away is one too (:func:`_failure`)."""
    from elasticsearch import ApiError, TransportError

    from pipeline.logs.search import invalid_query_reason

    try:
        answer: Any = es.indices.validate_query(
            index=alias, query=query, explain=True, ignore_unavailable=True, allow_no_indices=True
        )
    except (ApiError, TransportError) as error:
        failure = _failure(error, server)
        if isinstance(failure, _Unavailable):
            raise failure from None
        return  # a user allowed to search but not this: no check
    # ObjectApiResponse, or a test's fake: a dict
    reason = invalid_query_reason(answer.body if hasattr(answer, "body") else answer)
    if reason is not None:
        raise PipelineError(f"bad query: {reason}")


def _follow(
    es: Elasticsearch,
    alias: str,
    query: str,
    filters: dict[str, Any],
    hits: list[dict[str, Any]],
    start: datetime,
    output: str,
    limit: int,
    *,
    server: ElasticsearchSettings,
    after: list[Any] | None = None,
) -> None:
    """Print the lines that match after ``hits`` (those shown), oldest first, until Ctrl-C.

    Each poll asks for the lines since the newest one printed less 30 s (lines shipped late
    are printed too) and prints those not printed yet. ``after``: the sort values of the oldest
    line shown after a cut; the lines that were already there at or before it in the search's
    order (left out of the first page, not new) are noted as seen at the start, never printed.
    A line stamped in the future (a host's clock ahead) moves the window no further than now,
    or it would hide the lines stamped now.

    An outage (:class:`_Unavailable`: Elasticsearch not reached, not answering within its
    request timeout, or busy) is waited out: one warning line when it starts, one line when
    Elasticsearch answers again, and the polls go on from where they were, so the lines
    shipped meanwhile are printed then. Any other error ends the command (one line, exit 2).
    """
    from pipeline.logs.search import build_query, moment_of, search_body

    seen: dict[str, datetime] = {}
    newest = start
    for hit in hits:
        moment = moment_of(hit, start)
        seen[hit["_id"]] = moment
        newest = max(newest, min(moment, datetime.now(UTC)))

    def each_page(body: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        # Every line asked for, page after page (a page of lines all printed before would
        # otherwise come back on every poll, and nothing after them ever be seen).
        while True:
            page = _search(es, alias, body, server)["hits"]
            yield page
            if len(page) < limit or "sort" not in page[-1]:
                return
            body["search_after"] = page[-1]["sort"]

    def note_seen_before(up_to: list[Any]) -> None:
        left_out = build_query(
            query, since=max(newest - _FOLLOW_OVERLAP, start), up_to=up_to, **filters
        )
        body = search_body(left_out, size=limit, oldest_first=True, count=False)
        for page in each_page(body):
            for hit in page:
                seen.setdefault(hit["_id"], moment_of(hit, start))

    waiting = False  # for an Elasticsearch that is away (said once)
    while True:
        time.sleep(_FOLLOW_POLL_S)
        since = newest - _FOLLOW_OVERLAP
        body = search_body(
            build_query(query, since=max(since, start), **filters),
            size=limit,
            oldest_first=True,
            count=False,  # only the lines matter here, not how many matched
        )
        try:
            if after:  # before the first poll (again, if an outage interrupted it)
                note_seen_before(after)
                after = None
            for page in each_page(body):
                if waiting:
                    _err.print("Elasticsearch answers again; following")
                    waiting = False
                fresh = [hit for hit in page if hit["_id"] not in seen]
                for hit in fresh:
                    moment = moment_of(hit, start)
                    seen[hit["_id"]] = moment
                    newest = max(newest, min(moment, datetime.now(UTC)))
                _print(fresh, output)
        except _Unavailable as error:
            if not waiting:
                _err.print(
                    f"[yellow]warning:[/yellow] {escape(str(error))}; still following "
                    "(Ctrl-C to stop)"
                )
                waiting = True
            continue
        horizon = newest - _FOLLOW_OVERLAP * 2
        for key in [key for key, moment in seen.items() if moment < horizon]:
            del seen[key]

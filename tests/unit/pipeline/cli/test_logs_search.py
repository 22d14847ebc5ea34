"""``pipeline logs search`` against a stand-in Elasticsearch: one odd document never blanks the
output, an unreadable answer and a missing index are one-line errors, a cut is said."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from elasticsearch import SerializationError
from typer.testing import CliRunner

from pipeline.cli import logs
from pipeline.cli.main import app
from pipeline.errors import PipelineError
from pipeline.logs import elasticsearch as logs_elasticsearch


def hit(doc_id, message, level="info"):
    return {
        "_id": doc_id,
        "_source": {
            "@timestamp": "2026-12-05T07:48:08.000Z",
            "log": {"level": level, "logger": "app"},
            "service": {"name": "fxs-svc"},
            "message": message,
        },
    }


class FakeIndices:
    def __init__(self, exists):
        self._exists = exists

    def exists(self, index, allow_no_indices=True):
        return self._exists

    def validate_query(self, index, query, **options):
        return {"valid": True, "explanations": []}


class FakeElasticsearch:
    """Answers every search with ``answer`` (or raises it)."""

    def __init__(self, answer, *, exists=True):
        self.answer = answer
        self.indices = FakeIndices(exists)
        self.bodies = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None

    def search(self, index, **body):
        self.bodies.append(body)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def answer(hits, total=None):
    counted = total if total is not None else {"value": len(hits), "relation": "eq"}
    return {"hits": {"total": counted, "hits": hits}}


def search(monkeypatch, es, *args, charset="utf-8"):
    monkeypatch.setattr(logs_elasticsearch, "build_elasticsearch", lambda settings: es)
    return CliRunner(charset=charset).invoke(app, ["logs", "search", *args])


# A document whose message was "\ud800" (a JSON escape of a lone surrogate): the client reads
# it as a str holding the surrogate, which UTF-8 cannot encode.
ODD = hit("b", "\ud800 odd", level="warning")


def test_a_hit_with_a_lone_surrogate_does_not_blank_the_table(monkeypatch):
    result = search(monkeypatch, FakeElasticsearch(answer([ODD, hit("a", "normal é line")])))

    assert result.exception is None, result.exception
    assert "\\ud800 odd" in result.stdout
    assert "normal é line" in result.stdout


def test_a_hit_with_a_lone_surrogate_does_not_blank_the_ndjson(monkeypatch):
    es = FakeElasticsearch(answer([ODD, hit("a", "normal é line")]))

    result = search(monkeypatch, es, "-o", "ndjson")

    assert result.exception is None, result.exception
    lines = result.stdout.splitlines()
    assert lines[0] == json.dumps(hit("a", "normal é line")["_source"], ensure_ascii=False)
    # The odd line is JSON escapes where it cannot be text: the same document for a reader.
    assert json.loads(lines[1]) == ODD["_source"]


def test_ndjson_on_an_ascii_stdout_escapes_what_it_cannot_write(monkeypatch):
    result = search(monkeypatch, FakeElasticsearch(answer([hit("a", "é")])), "-o", "ndjson")
    ascii_result = search(
        monkeypatch, FakeElasticsearch(answer([hit("a", "é")])), "-o", "ndjson", charset="ascii"
    )

    assert json.loads(result.stdout)["message"] == "é"
    assert ascii_result.exception is None, ascii_result.exception
    assert json.loads(ascii_result.stdout)["message"] == "é"


def test_any_other_failure_to_print_is_one_line_not_a_traceback(monkeypatch):
    def broken(*args):
        raise RuntimeError("the renderer broke")

    monkeypatch.setattr(logs, "_table", broken)

    result = search(monkeypatch, FakeElasticsearch(answer([hit("a", "x")])))

    assert isinstance(result.exception, PipelineError)  # run() makes it "error: ..." and exit 2
    assert str(result.exception) == (
        "cannot print the search's results: RuntimeError: the renderer broke"
    )


def _unreadable_answer():
    raw = (
        b'{"took":2,"hits":{"total":{"value":1,"relation":"eq"},"hits":[{"_index":'
        b'"pipeline-logs-2026.12.05","_id":"c","_source":\xef\xbb\xbf{"message":"bom"}}]}}'
    )
    try:
        json.loads(raw)
    except ValueError as error:
        return SerializationError(f"Unable to deserialize as JSON: {raw!r}", errors=(error,))
    raise AssertionError("the answer parsed")


def test_an_answer_the_client_cannot_read_is_one_line_naming_the_document(monkeypatch):
    result = search(monkeypatch, FakeElasticsearch(_unreadable_answer()))

    assert isinstance(result.exception, PipelineError)
    assert str(result.exception) == (
        "matching document c in index pipeline-logs-2026.12.05 (its source starts with a UTF-8 "
        "byte order mark) cannot be read back from Elasticsearch (its source is not valid "
        "JSON), so this search shows nothing; narrow the query or --since to leave it out"
    )


def test_a_plain_text_answer_without_a_content_type_is_not_called_an_unreadable_document(
    monkeypatch,
):
    # Another shipper's metrics port at the URL: the client reads its answer as JSON, fails,
    # and the search blamed a document of Elasticsearch's answer.
    from elastic_transport import JsonSerializer

    monkeypatch.setenv("PIPELINE_ELASTICSEARCH__URL", "http://127.0.0.1:9110")
    try:
        JsonSerializer().loads(b"# HTTP 405 Method Not Allowed\n")
    except SerializationError as error:
        unreadable = error
    result = search(monkeypatch, FakeElasticsearch(unreadable))

    assert isinstance(result.exception, PipelineError)
    assert str(result.exception) == (
        "the server at http://127.0.0.1:9110 did not answer as Elasticsearch (# HTTP 405 "
        "Method Not Allowed); check PIPELINE_ELASTICSEARCH__URL (Elasticsearch's address, "
        "without a path)"
    )


def test_more_matches_than_shown_are_said_on_stderr(monkeypatch):
    hits = [hit(str(n), f"line {n}") for n in range(3)]
    es = FakeElasticsearch(answer(hits, total={"value": 40_000, "relation": "eq"}))

    result = search(monkeypatch, es, "--limit", "3")

    assert result.exception is None, result.exception
    assert result.stderr.splitlines()[-1] == (
        "showing 3 of 40,000 matches; raise --limit or narrow the query"
    )
    assert es.bodies[0]["track_total_hits"] == 10_000


def test_a_lower_bound_is_said_as_such_and_all_shown_says_nothing(monkeypatch):
    hits = [hit(str(n), f"line {n}") for n in range(3)]
    many = FakeElasticsearch(answer(hits, total={"value": 10_000, "relation": "gte"}))

    cut = search(monkeypatch, many, "--limit", "3")
    whole = search(monkeypatch, FakeElasticsearch(answer(hits)), "--limit", "3")

    assert "showing 3 of 10,000 or more matches" in cut.stderr
    assert "showing" not in whole.stderr


@pytest.mark.parametrize("follow", [[], ["--follow"]])
def test_an_alias_with_no_index_behind_it_is_an_error_not_an_empty_result(monkeypatch, follow):
    result = search(monkeypatch, FakeElasticsearch(answer([]), exists=False), *follow)

    assert isinstance(result.exception, PipelineError)
    assert str(result.exception) == (
        "no log index behind pipeline-logs on Elasticsearch: is PIPELINE_LOGS__INDEX_ALIAS "
        "right, and has `pipeline logs ship` run?"
    )


def test_an_existing_index_where_nothing_matched_is_an_empty_result(monkeypatch):
    result = search(monkeypatch, FakeElasticsearch(answer([]), exists=True))

    assert result.exit_code == 0, result.exception
    assert "no log lines since" in result.stderr


@pytest.mark.parametrize("option", ["--service", "--correlation-id"])
def test_an_empty_filter_is_a_usage_error_not_every_line(monkeypatch, option):
    es = FakeElasticsearch(answer([hit("a", "a line")]))

    result = search(monkeypatch, es, option, "")

    assert result.exit_code == 2
    assert "must not be empty" in result.output
    assert es.bodies == []


def _refused(error_class, status, body):
    from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig

    meta = ApiResponseMeta(
        status=status,
        http_version="1.1",
        headers=HttpHeaders(),
        duration=0.0,
        node=NodeConfig("http", "127.0.0.1", 9200),
    )
    return error_class(message=str(body), meta=meta, body=body)


NO_HANDLER = "no handler found for uri [/prefix/pipeline-logs/_search] and method [POST]"
HTML = "<!DOCTYPE HTML>\n<html lang='en'>\n<head><title>Error response</title></head>\n</html>"


@pytest.mark.parametrize(
    ("status", "body", "first_line"),
    [
        (400, {"error": NO_HANDLER}, NO_HANDLER),  # Elasticsearch, with a path after the host
        (501, HTML, "<!DOCTYPE HTML>"),  # another HTTP server
        (404, None, "an empty answer"),
    ],
)
def test_a_url_that_is_not_elasticsearchs_is_said_so_not_called_a_bad_query(
    monkeypatch, status, body, first_line
):
    from elasticsearch import ApiError

    # All three read "bad query: ..." (the empty one "bad query: None").
    monkeypatch.setenv("PIPELINE_ELASTICSEARCH__URL", "http://user:hunter2@127.0.0.1:9200/prefix")
    result = search(monkeypatch, FakeElasticsearch(_refused(ApiError, status, body)))

    assert isinstance(result.exception, PipelineError)
    assert str(result.exception) == (
        "the server at http://user:[REDACTED]@127.0.0.1:9200/prefix did not answer as "
        f"Elasticsearch ({status}: {first_line}); check PIPELINE_ELASTICSEARCH__URL "
        "(Elasticsearch's address, without a path)"
    )


def test_a_query_elasticsearch_cannot_parse_is_still_a_bad_query(monkeypatch):
    from elasticsearch import BadRequestError

    cause = {"type": "parse_exception", "reason": "Encountered <EOF> at line 1, column 3"}
    body = {
        "error": {
            "type": "search_phase_execution_exception",
            "reason": "all shards failed",
            "failed_shards": [{"reason": {"type": "query_shard_exception",
                                          "reason": "Failed to parse query [a:(]",
                                          "caused_by": cause}}],
        },
        "status": 400,
    }  # fmt: skip
    result = search(monkeypatch, FakeElasticsearch(_refused(BadRequestError, 400, body)), "a:(")

    assert str(result.exception) == (
        "bad query: Failed to parse query [a:(]: Encountered <EOF> at line 1, column 3"
    )


def test_help_says_a_since_time_without_an_offset_is_utc():
    result = CliRunner().invoke(app, ["logs", "search", "--help"], env={"COLUMNS": "200"})

    assert "read as UTC unless it has an offset" in " ".join(result.stdout.split())


@pytest.mark.parametrize("since", [["--since", "-5m"], ["--since=-5m"]], ids=["apart", "joined"])
def test_since_with_a_minus_is_as_far_back_as_without(monkeypatch, since):
    # As `pipeline record --from-time -5m` writes a time back from now: not read as an option,
    # and not as 5 minutes ahead (which no line could match).
    es = FakeElasticsearch(answer([hit("a", "a line")]))
    before = datetime.now(UTC).replace(microsecond=0)  # what is sent has milliseconds only
    result = search(monkeypatch, es, *since)
    after = datetime.now(UTC)

    assert result.exit_code == 0, result.output
    [sent] = [
        f["range"]["@timestamp"]["gte"]
        for f in es.bodies[0]["query"]["bool"]["filter"]
        if "range" in f and "@timestamp" in f["range"]
    ]
    moment = datetime.fromisoformat(sent.replace("Z", "+00:00"))
    assert before - timedelta(minutes=5) <= moment <= after - timedelta(minutes=5), sent


def _later_than_filtered(query):
    """Whether a search's query keeps only lines at or before some line (``up_to``)."""
    return "must_not" in json.dumps(query)


def test_follow_after_a_cut_prints_late_lines_but_not_those_left_out_of_the_first_page(
    monkeypatch,
):
    # Lines of one bulk share a millisecond: the first poll printed a line of that millisecond
    # left out of the first page, older than every line shown. But a line shipped late, after
    # the start, stamped before the oldest shown, is printed (it was not printed at all once
    # every poll asked only for lines after the oldest shown).
    shown = [{**hit(str(n), f"line {n}"), "sort": [1796538000123, f"id-{n}"]} for n in (9, 8)]
    left_out = {**hit("7", "left out of the first page"), "sort": [1796538000123, "id-7"]}
    late = {**hit("late", "shipped late"), "sort": [1796538000100, "id-late"]}

    class Following(FakeElasticsearch):
        def search(self, index, **body):
            self.bodies.append(body)
            if len(self.bodies) == 1:  # the first page
                return answer(shown, total={"value": 10, "relation": "eq"})
            if _later_than_filtered(body["query"]):  # the lines already there, up to the cut
                return answer([left_out])
            if len(self.bodies) > 3:
                raise KeyboardInterrupt
            return answer([late, left_out, *reversed(shown)])  # the first poll

    monkeypatch.setattr(logs, "_FOLLOW_POLL_S", 0)
    result = search(monkeypatch, Following(None), "--follow", "--limit", "2", "-o", "ndjson")

    printed = [json.loads(line)["message"] for line in result.stdout.splitlines()]
    assert printed == ["line 8", "line 9", "shipped late"], result.stdout


def test_follow_is_not_blinded_by_a_line_stamped_in_the_future(monkeypatch):
    # A host's clock 10 minutes ahead: the window of the polls (newest printed less 30 s)
    # moved past now, and lines stamped now were never printed.
    future = hit("future", "clock ahead")
    future["_source"]["@timestamp"] = "2999-01-01T00:00:00.000Z"

    class Following(FakeElasticsearch):
        def search(self, index, **body):
            self.bodies.append(body)
            if len(self.bodies) == 1:
                return answer([future])
            raise KeyboardInterrupt

    monkeypatch.setattr(logs, "_FOLLOW_POLL_S", 0)
    es = Following(None)
    search(monkeypatch, es, "--follow")

    [since] = [
        f["range"]["@timestamp"]["gte"]
        for f in es.bodies[1]["query"]["bool"]["filter"]
        if "range" in f and "@timestamp" in f["range"]
    ]
    window_start = datetime.fromisoformat(since.replace("Z", "+00:00"))
    assert window_start <= datetime.now(UTC), since

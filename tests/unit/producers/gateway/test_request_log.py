"""The gateway's log of its answers: a line per request at the level of what it says, except the
503s an outage gives every request, which are a WARNING for the first, then one line per
interval counting them, and one line when they end. A fake clock; the summaries are written by
:meth:`RequestLog.tick`, which the running gateway calls every second."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from producers.gateway.request_log import RequestLog

PATH = "/v1/requests/place_order"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def answer(log: RequestLog, status: int, code: str | None = None, path: str = PATH) -> None:
    log.answered(
        method="POST",
        path=path,
        status=status,
        code=code,
        replayed=False,
        client="shop",
        event_id=None,
        elapsed_s=0.0012,
    )


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    records = [r for r in caplog.records if r.name == "producers.gateway"]
    caplog.clear()
    return [(r.levelno, r.getMessage()) for r in records]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def log(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> RequestLog:
    caplog.set_level(logging.DEBUG, logger="producers.gateway")
    return RequestLog(interval_s=10, clock=clock)


@pytest.mark.parametrize(
    "code",
    [
        "kafka_unavailable",
        "not_acknowledged",
        "overloaded",
        "idempotency_unavailable",
        "keys_unavailable",
    ],
)
def test_the_first_refusal_of_an_outage_is_a_warning_and_the_next_ones_are_at_debug(
    log: RequestLog, caplog: pytest.LogCaptureFixture, code: str
):
    for _ in range(500):
        answer(log, 503, code)

    said = lines(caplog)

    assert said[0] == (
        logging.WARNING,
        f"POST {PATH} -> 503 {code} (client shop, 1.2 ms); the next 503 {code} answers are "
        "logged at DEBUG and counted in a line every 10 s",
    )
    assert said[1:] == [(logging.DEBUG, f"POST {PATH} -> 503 {code} (client shop, 1.2 ms)")] * 499


def test_every_interval_one_warning_counts_the_refusals_that_came_in_it(
    log: RequestLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
):
    answer(log, 503, "kafka_unavailable")
    for _ in range(3411):
        clock.now += 0.001
        answer(log, 503, "kafka_unavailable")
    clock.now = 109.9
    log.tick()  # not due yet
    lines(caplog)
    clock.now = 110.2
    log.tick()
    after_10_s = lines(caplog)
    for _ in range(7):
        answer(log, 503, "kafka_unavailable")
    clock.now = 120.5
    log.tick()
    log.tick()  # once per interval; and none came after those 7: the end's line, too
    after_20_s = lines(caplog)

    assert after_10_s == [
        (
            logging.WARNING,
            "503 kafka_unavailable: 3,411 requests refused in the last 10 s (3,412 in 3 s so far)",
        )
    ]
    assert after_20_s[7:] == [
        (
            logging.WARNING,
            "503 kafka_unavailable: 7 requests refused in the last 10 s (3,419 in 10 s so far)",
        ),
        (
            logging.INFO,
            "503 kafka_unavailable: none in the last 10 s; 3,419 requests were refused in 10 s",
        ),
    ]


def test_an_interval_without_a_refusal_ends_them_in_one_info_line_then_the_next_is_a_first(
    log: RequestLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
):
    answer(log, 503, "idempotency_unavailable")
    clock.now += 5
    answer(log, 503, "idempotency_unavailable")
    clock.now += 5
    log.tick()  # the summary of the first 10 s
    lines(caplog)
    clock.now += 4
    log.tick()  # not due yet: the last refusal was 9 s ago
    clock.now += 1
    log.tick()  # an interval after the last refusal (not after the last line)
    ended = lines(caplog)
    clock.now += 60
    answer(log, 503, "idempotency_unavailable")

    assert ended == [
        (
            logging.INFO,
            "503 idempotency_unavailable: none in the last 10 s; 2 requests were refused in 5 s",
        )
    ]
    [(level, line)] = lines(caplog)
    assert level == logging.WARNING and "the next 503 idempotency_unavailable answers" in line


def test_a_refusal_after_a_quiet_interval_the_ticker_missed_ends_the_last_ones_first(
    log: RequestLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
):
    answer(log, 503, "idempotency_unavailable")
    lines(caplog)
    clock.now += 30  # no tick meanwhile (a busy event loop)
    answer(log, 503, "idempotency_unavailable")

    said = lines(caplog)

    assert said[0] == (
        logging.INFO,
        "503 idempotency_unavailable: none in the last 30 s; 1 request was refused in 0 s",
    )
    assert said[1][0] == logging.WARNING and len(said) == 2


def test_a_summary_due_is_written_before_the_refusal_that_finds_it_due(
    log: RequestLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
):
    answer(log, 503, "overloaded")
    answer(log, 503, "overloaded")
    lines(caplog)
    clock.now += 12  # the ticker is late (a busy event loop)
    answer(log, 503, "overloaded")

    assert lines(caplog) == [
        (logging.WARNING, "503 overloaded: 1 request refused in the last 12 s (2 in 0 s so far)"),
        (logging.DEBUG, f"POST {PATH} -> 503 overloaded (client shop, 1.2 ms)"),
    ]


def test_each_kind_of_refusal_is_summed_up_on_its_own(
    log: RequestLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
):
    for _ in range(3):
        answer(log, 503, "kafka_unavailable")
        answer(log, 503, "not_acknowledged")
    clock.now += 5
    answer(log, 503, "not_acknowledged")
    clock.now += 5
    log.tick()

    said = lines(caplog)

    assert [level for level, _ in said[:7]] == [logging.WARNING] * 2 + [logging.DEBUG] * 5
    assert said[7:] == [
        (
            logging.WARNING,
            "503 kafka_unavailable: 2 requests refused in the last 10 s (3 in 0 s so far)",
        ),
        (
            logging.WARNING,
            "503 not_acknowledged: 3 requests refused in the last 10 s (4 in 5 s so far)",
        ),
    ]


def test_a_summary_line_has_the_fields_of_the_lines_it_stands_for(
    log: RequestLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
):
    for _ in range(4):
        answer(log, 503, "kafka_unavailable")
    caplog.clear()
    clock.now += 10
    log.tick()

    [summary] = caplog.records
    fields: dict[str, Any] = {
        name: getattr(summary, name) for name in ("http_status", "error_code", "requests_refused")
    }
    assert fields == {"http_status": 503, "error_code": "kafka_unavailable", "requests_refused": 3}


def test_when_the_gateway_stops_the_refusals_no_line_counted_yet_get_one(
    log: RequestLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
):
    for _ in range(5):
        answer(log, 503, "kafka_unavailable")
    answer(log, 503, "overloaded")  # a first, said already
    lines(caplog)
    clock.now += 4

    log.close()

    assert lines(caplog) == [
        (
            logging.WARNING,
            "503 kafka_unavailable: 4 requests refused in the last 4 s (5 in 0 s so far)",
        )
    ]


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "shutting_down"), (500, "internal_error"), (501, "unsupported_transfer_coding")],
)
def test_other_5xx_answers_are_a_warning_each(
    log: RequestLog, caplog: pytest.LogCaptureFixture, status: int, code: str
):
    for _ in range(3):
        answer(log, status, code)

    assert [level for level, _ in lines(caplog)] == [logging.WARNING] * 3


def test_an_accepted_request_is_info_a_rejected_one_and_probes_are_debug(
    log: RequestLog, caplog: pytest.LogCaptureFixture
):
    answer(log, 202)
    answer(log, 400, "invalid_json")
    answer(log, 503, "kafka_unavailable", path="/healthz")  # a probe: not a refusal

    assert lines(caplog) == [
        (logging.INFO, f"POST {PATH} -> 202 ok (client shop, 1.2 ms)"),
        (logging.DEBUG, f"POST {PATH} -> 400 invalid_json (client shop, 1.2 ms)"),
        (logging.DEBUG, "POST /healthz -> 503 kafka_unavailable (client shop, 1.2 ms)"),
    ]


def test_the_interval_must_be_positive():
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        RequestLog(interval_s=0)

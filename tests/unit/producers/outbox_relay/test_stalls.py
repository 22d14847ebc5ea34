"""A relay whose round waits (a lock on the outbox table, a database that does not answer), on
SQLite over a stand-in Kafka client and a clock of the test's own.

Reproduced against PostgreSQL (``lock table pipeline_outbox in access exclusive mode`` for
45 s): nothing was published, ``database_up`` stayed 1, the oldest row's age stayed at its last
figure in every scrape, the periodic line did not come for 52 s and nothing said the relay had
stalled. Here the claim stands in for the waiting statement."""

from __future__ import annotations

import logging
import math
import threading

from sqlalchemy.exc import OperationalError

import producers.outbox_relay.failed_batches as failed_batches_module
import producers.outbox_relay.housekeeping as housekeeping_module
import producers.outbox_relay.relay as relay_module
from pipeline.kafka.producer import EventProducer
from pipeline.outbox.table import OutboxStatus
from pipeline.settings import OutboxSettings
from producers.outbox_relay import OutboxRelay
from producers.outbox_relay.housekeeping import Housekeeping
from producers.outbox_relay.metrics import RelayMetrics
from tests.unit.producers.outbox_relay.fake_kafka import FakeKafka
from tests.unit.producers.outbox_relay.test_outage import Clock, Stop, _write

REPORT_LOGGER = "producers.outbox_relay.housekeeping"
FIGURES = (
    "pipeline_outbox_backlog",
    "pipeline_outbox_oldest_unpublished_age_seconds",
    "pipeline_outbox_publish_rate",
)


def _status(backlog: int, age: float | None = 6.08, last_minute: int = 120) -> OutboxStatus:
    return OutboxStatus(backlog, age, last_minute, ())


def _sample(metrics: RelayMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


# --- the metrics, on their own ---------------------------------------------------------------


def test_stalled_seconds_grows_while_a_round_waits_and_is_0_once_it_finished() -> None:
    clock = Clock()
    metrics = RelayMetrics(clock=clock.monotonic)
    clock.now += 3.0
    metrics.round_finished()
    finished = _sample(metrics, "pipeline_outbox_stalled_seconds")
    metrics.now_doing("claiming rows")

    clock.now += 45.0  # the claim waits on a lock: the loop tells nothing meanwhile

    assert finished == 0.0
    assert _sample(metrics, "pipeline_outbox_stalled_seconds") == 45.0
    assert metrics.current_stall() == (45.0, "claiming rows")
    metrics.round_finished()
    assert _sample(metrics, "pipeline_outbox_stalled_seconds") == 0.0


def test_the_status_figures_are_unknown_once_read_more_than_three_intervals_ago() -> None:
    clock = Clock()
    metrics = RelayMetrics(clock=clock.monotonic)
    before_any = [_sample(metrics, name) for name in FIGURES]
    metrics.observe(_status(4))
    clock.now += 15.0  # three reading intervals: still the figures
    recent = [_sample(metrics, name) for name in FIGURES]
    clock.now += 0.5  # no read since (the loop waits): they no longer tell the present

    old = [_sample(metrics, name) for name in FIGURES]

    assert all(math.isnan(value) for value in before_any)
    assert recent == [4.0, 6.08, 2.0]
    assert all(math.isnan(value) for value in old), old
    assert not metrics.status_fresh()
    metrics.observe(_status(0, None, 0))  # read again
    assert [_sample(metrics, name) for name in FIGURES] == [0.0, 0.0, 0.0]


def test_a_stalled_round_is_remembered_once_with_what_it_waited_on_longest() -> None:
    clock = Clock()
    metrics = RelayMetrics(clock=clock.monotonic)
    metrics.round_finished()
    for what, seconds in (("claiming rows", 40.0), ("sending to Kafka", 2.0)):
        metrics.now_doing(what)
        clock.now += seconds
    metrics.round_finished()
    stall = metrics.take_stall()
    metrics.now_doing("claiming rows")
    clock.now += 9.0  # under 10 s: not a stall
    metrics.round_finished()

    assert stall == (42.0, "claiming rows")
    assert metrics.take_stall() is None


# --- the relay, its claim waiting on a lock --------------------------------------------------


def _relay_on_the_test_clock(database, monkeypatch):
    clock = Clock()
    for module in (relay_module, housekeeping_module, failed_batches_module):
        monkeypatch.setattr(module, "time", clock)
    stop = Stop(clock)
    settings = OutboxSettings(poll_interval_s=1.0, log_interval_s=10.0)
    relay = OutboxRelay(
        database,
        EventProducer(FakeKafka()),
        settings,
        name="r",
        stop=stop,
        metrics=RelayMetrics(clock=clock.monotonic),
    )
    watched: list[object] = []

    def watch(published):
        # The thread ticks every second of real time: the test ticks instead, on its clock.
        watched.append(published)
        return lambda: watched.append("stopped")

    monkeypatch.setattr(relay._housekeeping, "watch", watch)
    return relay, clock, stop, watched


def _lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == REPORT_LOGGER]


def test_a_claim_waiting_on_a_lock_shows_as_stalled_and_the_line_keeps_coming(
    database, monkeypatch, caplog
):
    caplog.set_level(logging.INFO)
    _write(database, ["a", "b", "a"])
    relay, clock, stop, watched = _relay_on_the_test_clock(database, monkeypatch)
    real_claim = relay._claims.claim
    calls: list[float] = []
    seen: dict[int, dict[str, float | None]] = {}
    names = ("pipeline_outbox_stalled_seconds", "pipeline_outbox_database_up", *FIGURES)

    def claim(limit):
        calls.append(clock.now)
        if len(calls) == 2:  # the second claim: the table is locked for 45 s
            for second in range(1, 46):
                clock.now += 1.0
                relay._housekeeping.report_stalled(relay.totals.published)  # the watch's tick
                if second in (9, 20, 45):
                    seen[second] = {n: _sample(relay.metrics, n) for n in names}
            stop.set()
        return real_claim(limit)

    monkeypatch.setattr(relay._claims, "claim", claim)

    totals = relay.run()

    assert totals.published == 3
    assert seen[9]["pipeline_outbox_stalled_seconds"] == 9.0
    assert seen[20]["pipeline_outbox_stalled_seconds"] == 20.0
    assert seen[45]["pipeline_outbox_stalled_seconds"] == 45.0
    # No database error: the database is up, the wait shows in stalled_seconds.
    assert {seen[s]["pipeline_outbox_database_up"] for s in seen} == {1.0}
    assert seen[9]["pipeline_outbox_backlog"] == 0.0  # read 10 s before: recent
    for second in (20, 45):  # read 21 s and 46 s before: unknown, not frozen at 0
        assert all(math.isnan(seen[second][name]) for name in FIGURES), seen[second]
    lines = _lines(caplog)
    stalled = [line for line in lines if "stalled for" in line]
    assert stalled[:4] == [
        "outbox relay r: published 3 in 11 s (0/s); stalled for 10 s (claiming rows); "
        "backlog 0, oldest unpublished -",
        "outbox relay r: published 0 in 10 s (0/s); stalled for 20 s (claiming rows); "
        "backlog ?, oldest unpublished ?",
        "outbox relay r: published 0 in 10 s (0/s); stalled for 30 s (claiming rows); "
        "backlog ?, oldest unpublished ?",
        "outbox relay r: published 0 in 10 s (0/s); stalled for 40 s (claiming rows); "
        "backlog ?, oldest unpublished ?",
    ]
    # Once the round ended, the next line (here the final one) says it was stalled.
    assert lines[-1] == (
        "outbox relay r: published 0 in 5 s (0/s); was stalled for 45 s since the line before "
        "(claiming rows); backlog 0, oldest unpublished -"
    )
    assert watched[0]() == 3 and watched[-1] == "stopped"  # the watch, started and stopped


def test_on_sqlite_a_lock_held_past_the_busy_timeout_is_a_database_error_and_a_stall(
    database, monkeypatch, caplog
):
    # SQLite's busy timeout (30 s) turns a longer lock into "database is locked": then
    # database_up is 0 and the line says the database is down, counted from that error, and
    # stalled, counted from the last round that finished.
    caplog.set_level(logging.INFO)
    _write(database, ["a"])
    relay, clock, stop, _ = _relay_on_the_test_clock(database, monkeypatch)
    real_claim = relay._claims.claim
    calls: list[float] = []
    seen: list[float | None] = []

    def claim(limit):
        calls.append(clock.now)
        if len(calls) == 2:  # locked: SQLite waits 30 s, then gives up
            clock.now += 30.0
            raise OperationalError("UPDATE ...", {}, Exception("database is locked"))
        if len(calls) == 3:  # the lock is let go 10 s into the retry
            clock.now += 10.0
            seen.append(_sample(relay.metrics, "pipeline_outbox_database_up"))
            relay._housekeeping.report_stalled(relay.totals.published)
            stop.set()
        return real_claim(limit)

    monkeypatch.setattr(relay._claims, "claim", claim)

    relay.run()

    assert seen == [0.0]
    lines = _lines(caplog)
    assert any(
        "database down for 11 s, 1 try failed (database is locked); stalled for 41 s "
        "(claiming rows); backlog ?, oldest unpublished ?" in line
        for line in lines
    ), lines
    assert "was stalled for 41 s since the line before" in lines[-1]
    assert _sample(relay.metrics, "pipeline_outbox_database_up") == 1.0


# --- the watch's thread ----------------------------------------------------------------------


def test_the_watch_reports_from_a_thread_of_its_own_until_stopped(database, monkeypatch):
    housekeeping = Housekeeping(database, OutboxSettings(), RelayMetrics(), "r")
    called = threading.Event()
    seen: list[tuple[int, str]] = []

    def report_stalled(published: int) -> None:
        seen.append((published, threading.current_thread().name))
        called.set()

    monkeypatch.setattr(housekeeping, "report_stalled", report_stalled)
    stop = housekeeping.watch(lambda: 7, every_s=0.001)
    try:
        assert called.wait(10.0)
    finally:
        stop()

    assert seen[0] == (7, "outbox-relay-watch")
    assert not [t for t in threading.enumerate() if t.name == "outbox-relay-watch"]


def test_the_watch_writes_the_line_only_while_stalled_and_when_it_is_due(
    database, monkeypatch, caplog
):
    caplog.set_level(logging.INFO)
    clock = Clock()
    monkeypatch.setattr(housekeeping_module, "time", clock)
    metrics = RelayMetrics(clock=clock.monotonic)
    housekeeping = Housekeeping(database, OutboxSettings(log_interval_s=10.0), metrics, "r")
    housekeeping.report(0)  # reads the status; the line is due at 1010
    metrics.now_doing("sending to Kafka")
    said = []
    for now in (1009.0, 1010.0, 1015.0):
        clock.now = now
        housekeeping.report_stalled(5)
        said.append(len(_lines(caplog)))

    assert said == [0, 1, 1]  # not due; due and stalled 10 s; written already
    assert _lines(caplog) == [
        "outbox relay r: published 5 in 10 s (0/s); stalled for 10 s (sending to Kafka); "
        "backlog 0, oldest unpublished -"
    ]

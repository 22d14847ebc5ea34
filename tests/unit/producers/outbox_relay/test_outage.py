"""The relay while its database is away, on SQLite over a stand-in Kafka client, on a clock of
the test's own: how often it tries again, what it logs, what its metrics and log line say, and
that it publishes everything once the database is back (no broker, no network)."""

import itertools
import logging
import math
import threading

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

import producers.outbox_relay.failed_batches as failed_batches_module
import producers.outbox_relay.housekeeping as housekeeping_module
import producers.outbox_relay.relay as relay_module
from pipeline.envelope import Event
from pipeline.kafka.producer import EventProducer
from pipeline.outbox.table import Outbox, outbox_table
from pipeline.settings import OutboxSettings
from producers.outbox_relay import OutboxRelay
from producers.outbox_relay.housekeeping import Housekeeping
from producers.outbox_relay.metrics import RelayMetrics
from tests.unit.producers.outbox_relay.fake_kafka import FakeKafka

TOPIC = "orders.events"
RELAY_LOGGER = "producers.outbox_relay.relay"
REPORT_LOGGER = "producers.outbox_relay.housekeeping"


class Clock:
    """``time.monotonic`` for the relay's modules: moves only when the relay waits."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now


class Stop(threading.Event):
    """The relay's stop signal: a wait moves the clock instead of taking real time."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout=None):
        if self.is_set():
            return True
        self.clock.now += timeout
        return False


class DatabaseAway:
    """``claim`` failing as a database that cannot be reached does, ``failures`` times, then the
    real one; remembers when each try was made, and what the relay's metrics said then."""

    def __init__(self, relay, clock, failures, *, on_claim=None):
        self.relay = relay
        self.clock = clock
        self.failures = failures
        self.on_claim = on_claim
        self.real = relay._claims.claim
        self.tried_at: list[float] = []
        self.seen: list[dict[str, float | None]] = []

    def __call__(self, limit):
        self.tried_at.append(self.clock.now)
        registry = self.relay.metrics.registry
        self.seen.append(
            {
                name: registry.get_sample_value(name)
                for name in (
                    "pipeline_outbox_database_up",
                    "pipeline_outbox_backlog",
                    "pipeline_outbox_oldest_unpublished_age_seconds",
                    "pipeline_outbox_publish_rate",
                )
            }
        )
        if self.on_claim is not None:
            self.on_claim(len(self.tried_at))
        if len(self.tried_at) <= self.failures:
            raise OperationalError(
                "SELECT ...", {}, Exception("connection failed: Connection refused")
            )
        return self.real(limit)


def _write(engine, aggregates):
    outbox = Outbox()
    with engine.begin() as connection:
        for n, aggregate in enumerate(aggregates):
            event = Event(
                source="/orders", type="com.example.order.changed", partitionkey=aggregate,
                data={"n": n},
            )  # fmt: skip
            outbox.add(
                connection, event, aggregate_type="order", aggregate_id=aggregate, topic=TOPIC
            )


def _published(engine):
    with engine.connect() as connection:
        return connection.execute(
            sa.select(sa.func.count()).where(outbox_table.c.published_at.is_not(None))
        ).scalar_one()


def _on_the_test_clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(relay_module, "time", clock)
    monkeypatch.setattr(housekeeping_module, "time", clock)
    monkeypatch.setattr(failed_batches_module, "time", clock)
    return clock


def _relay(engine, client, stop, **outbox):
    settings = OutboxSettings(**{"poll_interval_s": 1.0, "log_interval_s": 5.0, **outbox})
    return OutboxRelay(engine, EventProducer(client), settings, name="r", stop=stop)


def _said(caplog, logger, level=None):
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == logger and (level is None or record.levelno == level)
    ]


def test_through_a_database_outage_the_relay_backs_off_says_so_and_publishes_all_after(
    database, monkeypatch, caplog
):
    # Through an outage it tried again after each poll interval (two ERROR lines a second with
    # the LISTEN warnings), its gauges kept their last figures and its log line stopped.
    caplog.set_level(logging.INFO)
    clock = _on_the_test_clock(monkeypatch)
    _write(database, ["a", "b", "a"])
    stop = Stop(clock)
    relay = _relay(database, FakeKafka(on_flush=stop.set), stop)
    away = DatabaseAway(relay, clock, failures=15)
    monkeypatch.setattr(relay._claims, "claim", away)

    totals = relay.run()

    # Tries: after 1 s, then twice as long each time, up to 5 s; the 16th one works.
    waits = [b - a for a, b in itertools.pairwise(away.tried_at)]
    assert waits == [1, 2, 4] + [5] * 12
    assert totals.published == 3 and _published(database) == 3

    # One ERROR line at first, the same error again only once a minute, with the count.
    errors = _said(caplog, RELAY_LOGGER, logging.ERROR)
    assert len(errors) == 2, errors
    assert errors[0] == (
        "outbox relay r: batch failed, retrying in 1 s (then less often, at least every 5 s, "
        "while it fails): connection failed: Connection refused"
    )
    assert errors[1].startswith("outbox relay r: batches still failing, 15 failed tries in 62 s")
    assert _said(caplog, RELAY_LOGGER, logging.INFO)[-1] == (
        "outbox relay r: batches work again, after 15 failed tries in 67 s"
    )

    # The gauges: unknown while the database is down, and the database said to be down.
    during = away.seen[1:15]
    assert all(seen["pipeline_outbox_database_up"] == 0 for seen in during)
    for name in (
        "pipeline_outbox_backlog",
        "pipeline_outbox_oldest_unpublished_age_seconds",
        "pipeline_outbox_publish_rate",
    ):
        assert all(math.isnan(seen[name]) for seen in during), name
    registry = relay.metrics.registry
    assert registry.get_sample_value("pipeline_outbox_database_up") == 1
    assert registry.get_sample_value("pipeline_outbox_backlog") == 0

    # The log line kept coming every 5 s, and said the database was down.
    lines = _said(caplog, REPORT_LOGGER)
    down = [line for line in lines if "database down for" in line]
    assert len(down) >= 12, lines
    assert down[0].startswith("outbox relay r: published 0 in 5 s (0/s); database down for ")
    assert down[0].endswith(
        "failed (connection failed: Connection refused); backlog ?, oldest unpublished ?"
    )
    assert "database down" not in lines[-1]  # the final line, once it worked again


def test_while_batches_fail_the_relay_does_not_try_to_listen_and_looks_again_once_back(
    database, monkeypatch
):
    # Each try to LISTEN again during the outage was a warning ("cannot LISTEN ..."), one per
    # failed batch; once back, rows committed before the LISTEN is made again must not wait.
    clock = _on_the_test_clock(monkeypatch)
    calls: list[str] = []

    class Listener:
        def __init__(self, _engine) -> None:
            pass

        def open(self) -> None:
            calls.append("open")

        def drain(self) -> None:
            calls.append("drain")

        def wait(self, timeout_s, _stop) -> bool:
            calls.append("wait")
            clock.now += timeout_s
            return False

        def close(self) -> None:
            calls.append("close")

    monkeypatch.setattr(relay_module, "NotifyListener", Listener)
    stop = Stop(clock)
    relay = _relay(database, FakeKafka(), stop)
    monkeypatch.setattr(relay._claims, "notifies", True)

    def claimed(n: int) -> None:
        calls.append(f"claim {n}")
        if n == 5:
            stop.set()  # the second claim after the database came back

    monkeypatch.setattr(relay._claims, "claim", DatabaseAway(relay, clock, 3, on_claim=claimed))

    relay.run()

    assert calls == [
        "open",
        "drain",
        "claim 1",  # fails: no LISTEN tried again until a batch works
        "claim 2",
        "claim 3",
        "claim 4",  # works
        "drain",  # LISTEN again, and look again at once, not wait for a NOTIFY
        "claim 5",
        "close",
    ]


def test_a_status_that_cannot_be_read_makes_its_gauges_unknown_not_the_last_figures(
    database, monkeypatch, caplog
):
    caplog.set_level(logging.INFO)
    _write(database, ["a", "b"])
    metrics = RelayMetrics()
    housekeeping = Housekeeping(database, OutboxSettings(log_interval_s=0), metrics, "r")
    housekeeping.report(0)
    assert metrics.registry.get_sample_value("pipeline_outbox_backlog") == 2

    def away(_engine):
        raise OperationalError("SELECT ...", {}, Exception("connection failed"))

    monkeypatch.setattr(housekeeping_module, "outbox_status", away)
    housekeeping.report(0, final=True)

    for name in (
        "pipeline_outbox_backlog",
        "pipeline_outbox_oldest_unpublished_age_seconds",
        "pipeline_outbox_publish_rate",
    ):
        assert math.isnan(metrics.registry.get_sample_value(name)), name
    assert housekeeping.last_status is None
    assert "cannot read the outbox status: connection failed" in caplog.text
    assert "published 0 in" in caplog.text and "backlog ?, oldest unpublished ?" in caplog.text


def test_another_error_is_logged_at_once_the_same_one_once_a_minute(caplog):
    from producers.outbox_relay.failed_batches import FailedBatches

    caplog.set_level(logging.INFO)
    failures = FailedBatches("r", 0.5, max_wait_s=2.0, every_s=60.0)

    waits = [failures.failed("refused", now=t) for t in (0.0, 0.5, 1.5, 3.5)]
    waits.append(failures.failed("read only", now=5.5))
    waits.append(failures.failed("refused", now=59.0))
    waits.append(failures.failed("refused", now=61.0))

    assert waits == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    said = _said(caplog, RELAY_LOGGER, logging.ERROR)
    assert [line.rsplit(": ", 1)[1] for line in said] == ["refused", "read only", "refused"]
    assert "7 failed tries in 61 s" in said[-1]
    assert failures.worked(now=62.0) is True
    assert failures.worked(now=63.0) is False  # said once
    assert failures.failed("refused", now=64.0) == 0.5  # a new outage starts over
    assert len(_said(caplog, RELAY_LOGGER, logging.ERROR)) == 4


def test_the_log_line_reads_the_backlog_afresh(database, monkeypatch, caplog):
    # Due just before the status's own refresh, the line showed the backlog of 5 s earlier,
    # from before the rows it said were published.
    caplog.set_level(logging.INFO)
    now = [-1.0]
    monkeypatch.setattr(housekeeping_module.time, "monotonic", lambda: now[0])
    _write(database, ["a", "b"])
    housekeeping = Housekeeping(database, OutboxSettings(log_interval_s=5), RelayMetrics(), "r")
    now[0] = 0.0
    housekeeping.report(0)  # the status, read now; the line is due at 4.0
    _write(database, ["c", "d", "e"])
    now[0] = 4.5  # the line is due, the status's own refresh (at 5.0) not yet

    housekeeping.report(0)

    assert "backlog 5, oldest unpublished" in caplog.text

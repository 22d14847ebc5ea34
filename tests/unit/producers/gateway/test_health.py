"""KafkaHealth: a metadata request with a short timeout, its answer kept a few seconds."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from producers.gateway.health import KafkaHealth

BOOTSTRAP = "127.0.0.1:19092"


class Cluster:
    """``list_topics`` of a cluster that is up or down; counts the requests."""

    def __init__(self, up: bool) -> None:
        self.up = up
        self.requests = 0
        self.timeouts: list[float] = []

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        self.requests += 1
        self.timeouts.append(timeout)
        if not self.up:
            raise KafkaException(
                KafkaError(KafkaError._TRANSPORT, "Failed to get metadata: broker down")
            )
        return object()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _health(cluster: Cluster, clock: Clock) -> KafkaHealth:
    return KafkaHealth(
        cluster.list_topics, bootstrap=BOOTSTRAP, timeout_s=2.0, cache_s=5.0, clock=clock
    )


def test_unreachable_kafka_is_one_line_naming_the_address():
    problem = asyncio.run(_health(Cluster(up=False), Clock()).problem())

    assert problem == f"Kafka at {BOOTSTRAP} does not answer (Failed to get metadata: broker down)"


def test_reachable_kafka_is_no_problem_and_the_request_has_the_short_timeout():
    cluster = Cluster(up=True)

    assert asyncio.run(_health(cluster, Clock()).problem()) is None
    assert cluster.timeouts == [2.0]


def test_the_answer_is_kept_for_cache_s_then_asked_again():
    cluster, clock = Cluster(up=False), Clock()
    health = _health(cluster, clock)

    async def main() -> list[str | None]:
        first = await health.problem()
        cluster.up = True
        clock.now += 4.9
        cached = await health.problem()
        clock.now += 0.2
        fresh = await health.problem()
        return [first, cached, fresh]

    first, cached, fresh = asyncio.run(main())

    assert first is not None and cached == first
    assert fresh is None
    assert cluster.requests == 2


def test_concurrent_checks_share_one_request():
    cluster = Cluster(up=True)
    health = _health(cluster, Clock())

    async def main() -> list[str | None]:
        return list(await asyncio.gather(*(health.problem() for _ in range(20))))

    assert asyncio.run(main()) == [None] * 20
    assert cluster.requests == 1


def test_a_refused_login_is_said_as_such_not_as_kafka_not_answering():
    # A wrong SASL password: the metadata request only times out, and /healthz said "does not
    # answer"; the admin client read the refusal from librdkafka's log.
    refused = "SASL authentication error: Authentication failed due to invalid credentials"
    health = KafkaHealth(
        Cluster(up=False).list_topics, bootstrap=BOOTSTRAP, clock=Clock(), refusal=lambda: refused
    )

    assert asyncio.run(health.problem()) == (
        f"Kafka at {BOOTSTRAP} refused the connection ({refused}); check the "
        "PIPELINE_KAFKA__SASL_* and PIPELINE_KAFKA__SSL_* settings"
    )


def test_kafka_not_answering_is_said_as_the_program_words_it_when_it_is_given_how():
    # `pipeline gateway` gives the commands' wording: a PLAINTEXT gateway at a SASL_SSL
    # listener only "did not answer", where every command names the setting to check.
    health = KafkaHealth(
        Cluster(up=False).list_topics,
        bootstrap=BOOTSTRAP,
        clock=Clock(),
        not_answering=lambda detail: f"worded: {detail}",
    )

    assert asyncio.run(health.problem()) == "worded: Failed to get metadata: broker down"


def test_a_refusal_long_past_is_not_blamed_for_a_later_outage():
    # The admin client remembered its last refusal for ever: after one, every outage of the
    # long-running gateway read "refused".
    refusals = ["SASL authentication error: bad password"]
    cluster, clock = Cluster(up=False), Clock()
    health = KafkaHealth(
        cluster.list_topics,
        bootstrap=BOOTSTRAP,
        clock=clock,
        cache_s=5.0,
        refusal=lambda: refusals.pop() if refusals else None,  # read once, as the admin's take
    )

    first = asyncio.run(health.problem())
    clock.now += 10
    later = asyncio.run(health.problem())

    assert first is not None and "refused the connection" in first
    assert later == f"Kafka at {BOOTSTRAP} does not answer (Failed to get metadata: broker down)"


def test_the_known_problem_is_the_last_answer_and_asks_kafka_nothing():
    # The gateway's 503 after produce_timeout_s reads it: a probe there held the answer up to
    # the probe's timeout longer (3 s for a 1 s produce_timeout_s; an outside re-check).
    cluster = Cluster(up=False)
    health = KafkaHealth(cluster.list_topics, bootstrap=BOOTSTRAP, clock=Clock())
    assert health.known_problem() is None and cluster.requests == 0

    said = asyncio.run(health.problem())

    assert health.known_problem() == said and said is not None
    assert cluster.requests == 1


# ---- the topics the gateway sends to, and refusing requests while a problem stands ----------


class Topics(Cluster):
    """A cluster that answers with its topics (a topic without partitions: being deleted)."""

    def __init__(self, *topics: str, empty: tuple[str, ...] = ()) -> None:
        super().__init__(up=True)
        self.topics = {name: SimpleNamespace(partitions={0: object()}) for name in topics}
        self.topics.update({name: SimpleNamespace(partitions={}) for name in empty})

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        super().list_topics(topic, timeout)
        return SimpleNamespace(topics=dict(self.topics))


ORDERS, CUSTOMERS = "requests.orders", "requests.customers"


def _watching(cluster: Cluster, clock: Clock | None = None, **options: Any) -> KafkaHealth:
    return KafkaHealth(
        cluster.list_topics,
        bootstrap=BOOTSTRAP,
        clock=clock or Clock(),
        topics=[ORDERS, CUSTOMERS],
        **options,
    )


def test_a_topic_the_gateway_sends_to_that_is_missing_is_named_as_every_command_says_it():
    # /healthz said ok with requests.customers deleted, and its requests waited 30 s for a 503.
    problem = asyncio.run(_watching(Topics(ORDERS, "other")).problem())

    assert problem == (
        f"topic {CUSTOMERS} does not exist on Kafka at {BOOTSTRAP} "
        "(create it first, e.g. with `pipeline topics apply`)"
    )


def test_a_topic_listed_without_partitions_is_missing_and_every_topic_there_is_no_problem():
    both = asyncio.run(_watching(Topics(empty=(ORDERS, CUSTOMERS))).problem())

    assert both is not None and both.startswith(f"topics {ORDERS}, {CUSTOMERS} do not exist")
    assert asyncio.run(_watching(Topics(ORDERS, CUSTOMERS)).problem()) is None


def test_a_problem_refuses_requests_only_once_two_answers_in_a_row_found_it():
    cluster = Cluster(up=False)
    health = _watching(cluster)

    async def answers() -> list[str | None]:
        seen = []
        for up in (False, True, False, False, True):
            cluster.up = up
            await health.check()
            seen.append(health.standing_problem(ORDERS))
        return seen

    single, after_recovery, one, two, recovered = asyncio.run(answers())

    # One failed probe (a blip) refuses nothing; the second in a row does; the first good
    # answer ends it.
    assert (single, after_recovery, one, recovered) == (None, None, None, None)
    assert two == f"Kafka at {BOOTSTRAP} does not answer (Failed to get metadata: broker down)"


def test_a_missing_topic_refuses_only_the_requests_to_it():
    health = _watching(Topics(ORDERS))

    async def twice() -> None:
        await health.check()
        await health.check()

    asyncio.run(twice())

    assert health.standing_problem(ORDERS) is None
    assert health.standing_problem(CUSTOMERS) == (
        f"topic {CUSTOMERS} does not exist on Kafka at {BOOTSTRAP} "
        "(create it first, e.g. with `pipeline topics apply`)"
    )


def test_an_old_answer_refuses_nothing():
    clock = Clock()
    health = _watching(Cluster(up=False), clock, cache_s=5.0, recheck_s=1.0, timeout_s=2.0)

    async def twice() -> None:
        await health.check()
        await health.check()

    asyncio.run(twice())
    refused_now = health.standing_problem(ORDERS)
    clock.now += 60  # no one asked since (nothing watches)

    assert refused_now is not None
    assert health.standing_problem(ORDERS) is None


class Scripted(Cluster):
    """Down or up at each request as ``script`` says, then up for good."""

    def __init__(self, *script: bool) -> None:
        super().__init__(up=False)
        self.script = list(script)

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        self.up = self.script.pop(0) if self.script else True
        return super().list_topics(topic, timeout)


def _watch(cluster: Cluster, requests: int, caplog: pytest.LogCaptureFixture) -> None:
    """Watch ``cluster`` until it was asked ``requests`` times, the gateway's log captured."""
    health = _watching(cluster, cache_s=0.001, recheck_s=0.001)

    async def main() -> None:
        watching = asyncio.create_task(health.watch())
        while cluster.requests < requests:
            await asyncio.sleep(0.001)
        watching.cancel()

    with caplog.at_level(logging.INFO, logger="producers.gateway"):
        asyncio.run(main())


def test_watching_says_when_a_problem_starts_and_when_it_ends(caplog: pytest.LogCaptureFixture):
    _watch(Scripted(False, False, True, True), 6, caplog)

    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.WARNING,
            f"Kafka at {BOOTSTRAP} does not answer (Failed to get metadata: broker down); "
            "GET /healthz answers 503 meanwhile",
        ),
        (logging.INFO, "Kafka answers again and every topic exists: GET /healthz is ok"),
    ]


class Flipping(Cluster):
    """Down, librdkafka's words for it alternating as they do at a listener of another kind."""

    def __init__(self) -> None:
        super().__init__(up=False)

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        self.requests += 1
        detail = "Local: Timed out" if self.requests % 2 else "Local: Broker transport failure"
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, detail))


def test_one_outage_in_librdkafkas_changing_words_is_warned_of_once(
    caplog: pytest.LogCaptureFixture,
):
    _watch(Flipping(), 6, caplog)

    assert [r.getMessage() for r in caplog.records] == [
        f"Kafka at {BOOTSTRAP} does not answer (Local: Timed out); "
        "GET /healthz answers 503 meanwhile"
    ]

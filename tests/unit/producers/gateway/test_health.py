"""KafkaHealth: a metadata request with a short timeout, its answer kept a few seconds."""

from __future__ import annotations

import asyncio
from typing import Any

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

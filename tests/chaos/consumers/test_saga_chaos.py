"""1,000 orders run their CreateOrder sagas while the orchestrator and the participants are
killed with SIGKILL again and again and restarted.

About one order in five meets an injected failure (a declined card, stock running out, a
shipment answered after the saga's timeout, refunds that fail before they succeed). Afterwards
every saga has ended (completed or compensated), stock never went negative and is conserved,
money is conserved (charges minus refunds equal the approved orders' total), and every
approved order was charged, shipped and sold while no rejected one kept any of those.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from consumers.saga_invariants import check_invariants
from pipeline.cli.demo_sagas import SAGA_GROUP_TOPICS, SAGA_SERVICES
from pipeline.cli.demo_services import PROCESSOR_NAME, PROCESSOR_SPEC
from pipeline.envelope import Event
from pipeline.kafka.clients import build_admin
from pipeline.kafka.groups import commit_group_at_end
from pipeline.sagas.state import TERMINAL
from pipeline.sagas.store import count_by_status
from pipeline.topics.admin import apply_plan, describe_cluster_topics
from pipeline.topics.catalogue import REQUESTS_ORDERS, default_catalogue, saga_commands_topic
from pipeline.topics.plan import build_plan
from tests.support.processor_runs import ProcessorProcess, produce, wait_until
from tests.support.stack_cli import PIPELINE

ORDERS = 1_000
KILLS = 6
STOCK_PER_SKU = 60
SKUS = 40
SEED = int(os.environ.get("PIPELINE_CHAOS_SEED", "20261202"))
#: Which topics each demo service's group reads, to start it at the end of what is there.
GROUP_TOPICS = {
    PROCESSOR_NAME: [REQUESTS_ORDERS, saga_commands_topic("orders")],
    **SAGA_GROUP_TOPICS,
}


def _orders(rng: random.Random) -> list[Event]:
    events = []
    for n in range(ORDERS):
        quantity = rng.randrange(1, 4)
        price = rng.randrange(500, 12_000) / 100  # declined above 100.00 in all
        events.append(
            Event(
                source="/tests/saga-chaos",
                type="com.example.requests.place_order",
                partitionkey=f"chaos-{SEED}-o{n}",
                data={
                    "order_id": f"chaos-{SEED}-o{n}",
                    "customer_id": f"c{n % 97}",
                    "lines": [
                        {
                            "sku": f"chaos-{SEED}-sku{rng.randrange(SKUS)}",
                            "quantity": quantity,
                            "unit_price": f"{price:.2f}",
                        }
                    ],
                },
            )
        )
    return events


@pytest.mark.timeout(900)
def test_saga_orders_survive_repeated_sigkill_of_orchestrator_and_participants(
    pipeline_stack, pipeline_settings, postgres_url, tmp_path: Path
):
    rng = random.Random(SEED)
    settings = pipeline_settings
    admin = build_admin(settings.kafka)
    catalogue = default_catalogue()
    apply_plan(admin, build_plan(catalogue, describe_cluster_topics(admin, catalogue.names)))
    # The topics are the catalogue's, shared with the demo: earlier runs' messages are not ours.
    for group, topics in GROUP_TOPICS.items():
        commit_group_at_end(settings.kafka, group, topics)

    env = {
        **os.environ,
        "PIPELINE_DATABASE__URL": postgres_url,
        "PIPELINE_PROCESSING__SESSION_TIMEOUT_S": "6",
        "PIPELINE_PROCESSING__METRICS_LOG_INTERVAL_S": "5",
        "PIPELINE_DEMO__STOCK_PER_SKU": str(STOCK_PER_SKU),
        "PIPELINE_DEMO__DECLINE_ABOVE_CENTS": "25000",
        "PIPELINE_DEMO__SLOW_SHIPPING_SHARE": "0.01",
        "PIPELINE_DEMO__FLAKY_REFUND_SHARE": "0.5",
        "PIPELINE_DEMO__REFUND_FAILURES": "2",
        "PIPELINE_LOGS__CONSOLE": "text",
    }
    specs = {PROCESSOR_NAME: PROCESSOR_SPEC, **dict(SAGA_SERVICES)}
    processes: dict[str, ProcessorProcess] = {}
    starts = {name: 0 for name in specs}

    def start(name: str) -> None:
        starts[name] += 1
        processes[name] = ProcessorProcess(
            env, tmp_path / f"{name}-{starts[name]}.log", spec=specs[name]
        )

    relay_log = (tmp_path / "relay.log").open("w")
    relay = subprocess.Popen(
        [PIPELINE, "outbox", "relay"], env=env, stdout=relay_log, stderr=relay_log
    )
    engine = sa.create_engine(postgres_url, pool_pre_ping=True)
    kills: list[str] = []
    try:
        for name in specs:
            start(name)
        produce(settings, REQUESTS_ORDERS, _orders(rng))

        def sagas() -> dict[str, int]:
            try:
                with engine.connect() as connection:
                    return count_by_status(connection)
            except sa.exc.DBAPIError:  # before the first program migrated the database
                return {}

        # Kill a saga process (never the order service: it only starts sagas) every few
        # seconds once sagas are moving, and start it again at once.
        victims = [name for name, _ in SAGA_SERVICES]
        wait_until(lambda: sum(sagas().values()) >= 50, timeout_s=180, what="sagas starting")
        while len(kills) < KILLS:
            time.sleep(rng.uniform(2.0, 5.0))
            victim = rng.choice(victims)
            processes[victim].assert_alive()
            processes[victim].kill()
            kills.append(victim)
            start(victim)

        def all_ended() -> bool:
            counts = sagas()
            return sum(counts.values()) == ORDERS and all(s in TERMINAL for s in counts)

        wait_until(all_ended, timeout_s=480, what=f"{ORDERS} sagas ending", every_s=1.0)
        with engine.connect() as connection:
            checks = check_invariants(connection)
            counts = count_by_status(connection)
        for process in processes.values():
            process.assert_alive()
    finally:
        for process in processes.values():
            process.stop_quietly()
        relay.kill()
        relay.wait(30)
        relay_log.close()
        engine.dispose()

    assert len(kills) >= 5 and set(kills) <= set(victims)
    violated = [f"{check.name}: {check.detail}" for check in checks if not check.held]
    assert violated == [], violated
    assert set(counts) <= {"completed", "compensated"}, counts
    # The failures were real: a fifth or so of the orders compensated.
    assert counts.get("compensated", 0) >= ORDERS // 10, counts
    assert counts.get("completed", 0) >= ORDERS // 2, counts

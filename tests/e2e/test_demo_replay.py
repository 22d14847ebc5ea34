"""The demo's recorded orders, replayed into the broker-free harness and into the real pipeline,
end with the same saga outcomes: the ones pinned in tests/data/demo_orders.golden.json.

On the real stack the order service, the saga orchestrator and the three participants run as
``pipeline process`` programs with ``pipeline outbox relay``, on a fresh PostgreSQL database;
the recording goes to ``requests.orders`` (a catalogue topic the demo shares: the backend starts
the groups at the topics' ends). ``--pipeline-backend driver|kafka`` runs one of the two.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from consumers import orders_service, payment_service
from consumers.saga_invariants import check_invariants
from pipeline.cli.demo_sagas import SAGA_SERVICES
from pipeline.cli.demo_services import PROCESSOR_NAME, PROCESSOR_SPEC
from pipeline.processing.inbox import inbox_table
from pipeline.replay.recording import RecordedMessage, read_recording
from pipeline.sagas.state import TERMINAL, SagaState
from pipeline.sagas.store import sagas_table
from pipeline.topics.catalogue import ORDERS_EVENTS, SAGA_EVENTS
from tests.data.make_demo_recording import DEMO_ENV

DATA = Path(__file__).resolve().parents[1] / "data"
RECORDING = DATA / "demo_orders.ndjson"
GOLDEN = DATA / "demo_orders.golden.json"
SERVICES = [PROCESSOR_SPEC, *(spec for _, spec in SAGA_SERVICES)]


def _requests(messages: list[RecordedMessage]) -> dict[str, str]:
    """Each request's event id -> ``"<order id> <request type>"``."""
    found = {}
    for message in messages:
        headers = dict(message.headers)
        kind = (headers["ce_type"] or b"").decode().rsplit(".", 1)[-1]
        order_id = json.loads(message.value or b"{}")["order_id"]
        found[(headers["ce_id"] or b"").decode()] = f"{order_id} {kind}"
    return found


def _sagas(connection: sa.Connection, order_ids: list[str]) -> dict[str, SagaState]:
    rows = connection.execute(
        sa.select(sagas_table.c.saga_id, sagas_table.c.state).where(
            sagas_table.c.saga_id.in_(order_ids)
        )
    ).all()
    return {saga_id: SagaState.model_validate(state) for saga_id, state in rows}


def _request_outcomes(
    connection: sa.Connection, event_ids: list[str], group: str
) -> dict[str, str]:
    rows = connection.execute(
        sa.select(inbox_table.c.event_id, inbox_table.c.outcome).where(
            inbox_table.c.consumer_group == group, inbox_table.c.event_id.in_(event_ids)
        )
    ).all()
    return {event_id: outcome for event_id, outcome in rows}


def _column(connection: sa.Connection, table: sa.Table, column: str, order_ids: list[str]):
    rows = connection.execute(
        sa.select(table.c.order_id, table.c[column]).where(table.c.order_id.in_(order_ids))
    )
    return dict(rows.all())


def outcomes(database: sa.Engine, messages: list[RecordedMessage], group: str) -> dict[str, Any]:
    """What became of each order (saga, order, payment, the saga's reason) and each request
    (``group``: the order service's consumer group, the owner of its inbox rows)."""
    requests = _requests(messages)
    order_ids = sorted({label.split()[0] for label in requests.values()})
    with database.connect() as connection:
        sagas = _sagas(connection, order_ids)
        orders = _column(connection, orders_service.orders, "status", order_ids)
        payments = _column(connection, payment_service.payments, "status", order_ids)
        handled = _request_outcomes(connection, list(requests), group)
    return {
        "orders": {
            order_id: {
                "saga": sagas[order_id].status if order_id in sagas else None,
                "reason": sagas[order_id].reason if order_id in sagas else None,
                "order": orders.get(order_id),
                "payment": payments.get(order_id),
            }
            for order_id in order_ids
        },
        "requests": {requests[event_id]: outcome for event_id, outcome in handled.items()},
    }


def _all_handled(database: sa.Engine, messages: list[RecordedMessage], group: str) -> bool:
    """Every request of ``messages`` is in the order service's inbox, and every order placed
    has a saga that ended."""
    requests = _requests(messages)
    places = {label.split()[0] for label in requests.values() if label.endswith("place_order")}
    with database.connect() as connection:
        sagas = _sagas(connection, sorted(places))
        handled = _request_outcomes(connection, list(requests), group)
    ended = len(sagas) == len(places) and all(s.status in TERMINAL for s in sagas.values())
    return ended and len(handled) == len(requests)


def _is_cancel(message: RecordedMessage) -> bool:
    return dict(message.headers)["ce_type"] == b"com.example.requests.cancel_order"


@pytest.mark.pipeline_backends("driver", "kafka")
@pytest.mark.timeout(300)
def test_the_demo_recording_ends_in_the_pinned_saga_outcomes(pipeline_backend, golden):
    messages = list(read_recording(RECORDING))
    orders = [m for m in messages if not _is_cancel(m)]
    cancels = [m for m in messages if _is_cancel(m)]
    backend = pipeline_backend(SERVICES, env=DEMO_ENV, topics=[ORDERS_EVENTS, SAGA_EVENTS])
    group = backend.consumer_group(PROCESSOR_NAME)  # the name itself on the driver

    # The orders, then (as recorded: ten minutes later) the cancellations, once every saga
    # ended: a cancel racing its order's saga could go either way.
    assert backend.replay(orders) == len(orders)
    backend.wait_until(
        lambda: _all_handled(backend.database, orders, group),
        timeout_s=180,
        what="every order handled and every saga ended",
    )
    assert backend.replay(cancels) == len(cancels)
    backend.wait_until(
        lambda: _all_handled(backend.database, messages, group),
        timeout_s=60,
        what="every cancellation handled",
    )

    placed = sorted(label.split()[0] for label in _requests(orders).values())
    with backend.database.connect() as connection:
        checks = check_invariants(connection, order_ids=placed)
    assert [f"{c.name}: {c.detail}" for c in checks if not c.held] == []
    golden.check(outcomes(backend.database, messages, group), GOLDEN)

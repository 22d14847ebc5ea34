"""The demo's CreateOrder saga end to end without a broker: the order service, the
orchestrator and the three participants wired through the outbox by the pipeline harness."""

from __future__ import annotations

import types

import pytest
import sqlalchemy as sa

from consumers import inventory_service, orders_service, payment_service, shipping_service
from consumers.order_saga import SHIPPING_TIMEOUT_S, registry
from consumers.saga_invariants import check_invariants
from pipeline.envelope import Event
from pipeline.processing.harness import PipelineHarness
from pipeline.sagas.orchestrator import SagaOrchestrator, orchestrator_processor
from pipeline.sagas.store import count_by_status, load_saga
from pipeline.settings import ProcessingSettings
from pipeline.topics.catalogue import REQUESTS_ORDERS


@pytest.fixture
def demo(monkeypatch):
    monkeypatch.setenv("PIPELINE_DEMO__SLOW_SHIPPING_SHARE", "0")
    monkeypatch.setenv("PIPELINE_DEMO__FLAKY_REFUND_SHARE", "0")
    monkeypatch.setenv("PIPELINE_DEMO__STOCK_PER_SKU", "10")
    monkeypatch.setenv("PIPELINE_DEMO__DECLINE_ABOVE_CENTS", "50000")

    def build() -> PipelineHarness:
        orchestrator = orchestrators[0] = SagaOrchestrator(registry)
        harness = PipelineHarness(
            [
                orders_service.processor,
                orchestrator_processor(orchestrator),
                inventory_service.processor,
                payment_service.processor,
                shipping_service.processor,
            ],
            # One event at a time: SQLite has one writer, so more only wait on its lock.
            settings=ProcessingSettings(max_in_flight=1),
        )
        orchestrator.clock = harness.clock
        monkeypatch.setattr(orders_service.saga_starter, "clock", harness.clock)
        return harness

    harnesses: list[PipelineHarness] = []
    orchestrators: dict[int, SagaOrchestrator] = {}

    def make() -> PipelineHarness:
        harness = build()
        harnesses.append(harness)
        return harness

    make.orchestrator = lambda: orchestrators[0]  # type: ignore[attr-defined]
    yield make
    for harness in harnesses:
        harness.close()


def place_order(order_id: str, sku: str = "sku-1", quantity: int = 2, price: str = "10.00"):
    return Event(
        source="/tests",
        type="com.example.requests.place_order",
        partitionkey=order_id,
        data={
            "order_id": order_id,
            "customer_id": "c1",
            "lines": [{"sku": sku, "quantity": quantity, "unit_price": price}],
        },
    )


def saga(harness: PipelineHarness, saga_id: str):
    with harness.database.connect() as connection:
        stored = load_saga(connection, saga_id)
    assert stored is not None
    return stored.state


def order_status(harness: PipelineHarness, order_id: str) -> str:
    with harness.database.connect() as connection:
        return connection.execute(
            sa.select(orders_service.orders.c.status).where(
                orders_service.orders.c.order_id == order_id
            )
        ).scalar_one()


def stock_of(harness: PipelineHarness, sku: str) -> tuple[int, int, int]:
    table = inventory_service.stock
    with harness.database.connect() as connection:
        row = connection.execute(
            sa.select(table.c.available, table.c.reserved, table.c.sold).where(table.c.sku == sku)
        ).one()
    return tuple(row)


def payment_status(harness: PipelineHarness, order_id: str) -> str | None:
    table = payment_service.payments
    with harness.database.connect() as connection:
        return connection.execute(
            sa.select(table.c.status).where(table.c.order_id == order_id)
        ).scalar_one_or_none()


def test_an_order_runs_its_saga_to_approval(demo):
    harness = demo()
    harness.send(REQUESTS_ORDERS, place_order("o-1", quantity=3))
    harness.run_until_idle()
    state = saga(harness, "o-1")
    assert state.status == "completed"
    assert order_status(harness, "o-1") == "approved"
    assert stock_of(harness, "sku-1") == (7, 0, 3)  # reserved, then confirmed as sold
    assert payment_status(harness, "o-1") == "charged"
    assert state.data["payment_id"] == "pay-o-1" and state.data["shipment_id"] == "ship-o-1"
    events = [e.type for e in harness.published("saga.events")]
    assert events[0] == "pipeline.saga.saga_started"
    assert events[-1] == "pipeline.saga.saga_completed"


def test_out_of_stock_rejects_the_order_and_keeps_the_stock(demo):
    harness = demo()
    harness.send(REQUESTS_ORDERS, place_order("o-0", quantity=1))
    harness.run_until_idle()
    harness.send(REQUESTS_ORDERS, place_order("o-1", quantity=10))
    harness.run_until_idle()
    assert saga(harness, "o-0").status == "completed"
    assert saga(harness, "o-1").status == "compensated"
    assert "out of stock" in saga(harness, "o-1").reason
    assert order_status(harness, "o-1") == "rejected"
    assert stock_of(harness, "sku-1") == (9, 0, 1)
    assert payment_status(harness, "o-1") is None


def test_an_order_with_one_sku_on_two_lines_reserves_their_sum_and_completes(demo):
    harness = demo()
    order = place_order("o-1", quantity=2)
    order.data["lines"].append({"sku": "sku-1", "quantity": 3, "unit_price": "10.00"})
    harness.send(REQUESTS_ORDERS, order)
    harness.run_until_idle()
    assert saga(harness, "o-1").status == "completed"
    assert stock_of(harness, "sku-1") == (5, 0, 5)


def test_lines_of_one_sku_that_together_exceed_the_stock_are_out_of_stock(demo):
    harness = demo()
    harness.send(REQUESTS_ORDERS, place_order("o-0", quantity=1))
    harness.run_until_idle()
    order = place_order("o-1", quantity=5)  # 5 + 5 of the 9 left
    order.data["lines"].append({"sku": "sku-1", "quantity": 5, "unit_price": "10.00"})
    harness.send(REQUESTS_ORDERS, order)
    harness.run_until_idle()
    state = saga(harness, "o-1")
    assert state.status == "compensated"
    assert "out of stock: sku-1 x10" in state.reason
    assert stock_of(harness, "sku-1") == (9, 0, 1)


def test_a_declined_card_releases_the_stock_and_rejects_the_order(demo, monkeypatch):
    monkeypatch.setenv("PIPELINE_DEMO__DECLINE_ABOVE_CENTS", "1000")
    harness = demo()
    harness.send(REQUESTS_ORDERS, place_order("o-1", quantity=2, price="10.00"))
    harness.run_until_idle()
    state = saga(harness, "o-1")
    assert state.status == "compensated" and "card declined" in state.reason
    assert order_status(harness, "o-1") == "rejected"
    assert stock_of(harness, "sku-1") == (10, 0, 0)
    assert payment_status(harness, "o-1") is None
    undone = [h.step for h in state.history if h.what == "compensation_succeeded"]
    assert undone == ["reserve_stock", "validate_order"]


def test_a_shipment_answered_too_late_is_compensated_and_its_late_reply_counted(demo, monkeypatch):
    monkeypatch.setenv("PIPELINE_DEMO__SLOW_SHIPPING_SHARE", "1")
    monkeypatch.setenv("PIPELINE_DEMO__FLAKY_REFUND_SHARE", "1")
    monkeypatch.setenv("PIPELINE_DEMO__REFUND_FAILURES", "2")
    harness = demo()
    # The slow courier takes virtual time, so the saga's deadline passes while it works.
    monkeypatch.setattr(
        shipping_service, "time", types.SimpleNamespace(sleep=harness.clock.advance)
    )
    harness.send(REQUESTS_ORDERS, place_order("o-1"))
    harness.run_until_idle()
    for _ in range(10):  # the refund's backoffs (0.5 s, then 1 s) pass
        harness.advance(1.0)
    state = saga(harness, "o-1")
    assert state.status == "compensated"
    assert f"no reply within {SHIPPING_TIMEOUT_S:g} s" in state.reason
    refunds = [
        h.what for h in state.history if h.step == "charge_payment" and h.kind == "compensation"
    ]
    assert refunds.count("compensation_failed") == 2
    assert refunds[-1] == "compensation_succeeded"
    assert payment_status(harness, "o-1") == "refunded"
    assert order_status(harness, "o-1") == "rejected"
    assert stock_of(harness, "sku-1") == (10, 0, 0)
    with harness.database.connect() as connection:
        shipment = connection.execute(sa.select(shipping_service.shipments.c.status)).scalar_one()
    assert shipment == "cancelled"  # it did happen, late, and was undone
    assert ignored_replies(demo.orchestrator()) == {"late": 1.0}


def ignored_replies(orchestrator: SagaOrchestrator) -> dict[str, float]:
    counts = {}
    for metric in orchestrator.metrics.ignored_replies.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["outcome"]] = sample.value
    return counts


def test_a_redelivered_command_is_answered_from_the_log_not_done_twice(demo):
    harness = demo()
    harness.send(REQUESTS_ORDERS, place_order("o-1", quantity=1))
    harness.run_until_idle()
    # The payment service's commands are read again from the start (a crash before commit).
    payments_driver = harness.driver("payment-service")
    payments_driver.redeliver("saga.payments.commands")
    with harness.database.begin() as connection:  # forget the inbox so the log must hold
        connection.execute(
            sa.text("DELETE FROM pipeline_inbox WHERE consumer_group = 'payment-service'")
        )
    harness.run_until_idle()
    with harness.database.connect() as connection:
        charges = connection.execute(
            sa.select(sa.func.count()).select_from(payment_service.payments)
        ).scalar_one()
    assert charges == 1
    assert saga(harness, "o-1").status == "completed"


def test_the_invariants_hold_over_a_mix_of_orders_failures_and_cancellations(demo, monkeypatch):
    monkeypatch.setenv("PIPELINE_DEMO__DECLINE_ABOVE_CENTS", "3000")
    monkeypatch.setenv("PIPELINE_DEMO__FLAKY_REFUND_SHARE", "1")
    harness = demo()
    for n in range(30):
        # Prices 10..39 EUR: above 30 declined; 5 SKUs of 10 units: some run out.
        harness.send(
            REQUESTS_ORDERS,
            place_order(f"o-{n}", sku=f"sku-{n % 5}", quantity=1 + n % 3, price=f"{10 + n}.00"),
        )
        if n % 7 == 0:
            harness.send(REQUESTS_ORDERS, cancel_order(f"o-{n}"))
    harness.run_until_idle()
    for _ in range(20):
        harness.advance(1.0)
    with harness.database.connect() as connection:
        checks = check_invariants(connection)
        states = count_by_status(connection)
    assert [c.name for c in checks if not c.held] == [], checks
    assert set(states) == {"completed", "compensated"}, states
    assert states["completed"] >= 5 and states["compensated"] >= 5


def test_a_run_s_invariants_leave_out_the_stock_an_earlier_interrupted_run_left_reserved(demo):
    harness = demo()
    harness.send(REQUESTS_ORDERS, place_order("run2-o-1", sku="run2-sku-1", quantity=1))
    harness.run_until_idle()
    with harness.database.begin() as connection:  # what an interrupted earlier run left
        connection.execute(
            sa.insert(inventory_service.stock).values(
                sku="run1-sku-1", available=8, reserved=2, sold=0, initial=10
            )
        )
        connection.execute(
            sa.insert(inventory_service.reservations).values(
                order_id="run1-o-1", sku="run1-sku-1", quantity=2, status="reserved"
            )
        )
    stock_check = "stock never negative and conserved"
    with harness.database.connect() as connection:
        everything = {c.name: c for c in check_invariants(connection)}
        this_run = {c.name: c for c in check_invariants(connection, order_ids=["run2-o-1"])}
    assert saga(harness, "run2-o-1").status == "completed"
    assert not everything[stock_check].held
    assert "2 units still reserved" in everything[stock_check].detail
    assert this_run[stock_check].held, this_run[stock_check]
    assert this_run[stock_check].detail.startswith("1 SKU,"), this_run[stock_check]


def cancel_order(order_id: str) -> Event:
    return Event(
        source="/tests",
        type="com.example.requests.cancel_order",
        partitionkey=order_id,
        data={"order_id": order_id, "reason": "changed my mind"},
    )

"""The demo's request processor: orders and customers, with their events through the outbox.

Run it with ``pipeline process consumers.orders_service:processor``. Each handler changes the
service's own tables and emits a domain event in the same transaction (the inbox row commits
with them); the outbox relay (``pipeline outbox relay``) publishes the events to
``orders.events``.

Two business rules make some requests fail on purpose, so the demo shows both kinds of dead
letter: an order line whose SKU starts with ``RECALLED`` makes the stock check fail every time
(retried, then ``retries_exhausted``), and cancelling an order that does not exist is refused at
once (``rejected``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    MetaData,
    Numeric,
    String,
    Table,
    bindparam,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from consumers.order_saga import OrderLineData, OrderSagaData, create_order, registry
from pipeline.envelope import Event
from pipeline.processing import Processor, Reject, UnitOfWork
from pipeline.request_types import CancelOrder, PlaceOrder, RegisterCustomer
from pipeline.sagas.orchestrator import SagaOrchestrator
from pipeline.sagas.participant import Refuse, SagaCommand, SagaParticipant
from pipeline.topics.catalogue import ORDERS_EVENTS, REQUESTS_CUSTOMERS, REQUESTS_ORDERS

__all__ = ["RECALLED_PREFIX", "StockCheckFailed", "processor", "service_tables"]

SOURCE = "/services/orders"
RECALLED_PREFIX = "RECALLED"

service_tables = MetaData()
orders = Table(
    "demo_orders",
    service_tables,
    Column("order_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("total", Numeric(14, 2), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
customers = Table(
    "demo_customers",
    service_tables,
    Column("customer_id", String(64), primary_key=True),
    Column("email", String(254), nullable=False),
    Column("name", String(200), nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
)

processor = Processor("orders-service")
# Its handlers only touch the database: the commands of many sagas commit in one transaction.
participant = SagaParticipant(processor, "orders", group_commit=True)
saga_starter = SagaOrchestrator(registry)


class StockCheckFailed(RuntimeError):
    """The (simulated) stock service refuses a recalled SKU, every time."""


@processor.on_start
def create_service_tables(database: Engine) -> None:
    # The service's own tables belong to the service, not to the pipeline's migrations.
    service_tables.create_all(database)


@processor.handler(REQUESTS_ORDERS, event_type="com.example.requests.place_order", model=PlaceOrder)
async def place_order(event: Event, unit: UnitOfWork) -> None:
    # Async, so orders take the runtime's group commit: the orders (and sagas) of many requests
    # commit in one transaction. Its database work is plain code, run in that transaction.
    request: PlaceOrder = unit.data
    recalled = [line.sku for line in request.lines if line.sku.startswith(RECALLED_PREFIX)]
    if recalled:
        raise StockCheckFailed(f"stock service refused recalled SKU {', '.join(recalled)}")
    total = sum((line.unit_price * line.quantity for line in request.lines), Decimal(0))
    unit.write(partial(_store_order, request, total))
    unit.emit(
        Event(
            source=SOURCE,
            type="com.example.orders.order_placed",
            subject=request.order_id,
            partitionkey=request.order_id,
            data={
                "order_id": request.order_id,
                "customer_id": request.customer_id,
                "total": str(total),
                "currency": request.currency,
            },
        ),
        aggregate_type="order",
        aggregate_id=request.order_id,
        topic=ORDERS_EVENTS,
    )


# The statements of every order, built once. The insert is SQL text: SQLAlchemy has no cache
# key for an INSERT ... ON CONFLICT and would compile it again for each order. PostgreSQL and
# SQLite (3.35 or later) both understand it as written.
_INSERT_ORDER = text(
    "INSERT INTO demo_orders (order_id, customer_id, status, total, currency, updated_at) "
    "VALUES (:order_id, :customer_id, 'placed', :total, :currency, :updated_at) "
    "ON CONFLICT DO NOTHING RETURNING order_id"
).bindparams(
    bindparam("total", type_=orders.c.total.type),
    bindparam("updated_at", type_=orders.c.updated_at.type),
)
_MOVE = (
    update(orders)
    .where(orders.c.order_id == bindparam("p_order_id"), orders.c.status == bindparam("p_expected"))
    .values(status=bindparam("p_status"), updated_at=bindparam("p_updated_at"))
    .returning(orders.c.order_id)
)


def _store_order(request: PlaceOrder, total: Decimal, session: Session) -> None:
    """The new order and, in the same transaction, its CreateOrder saga (an order seen before
    changes nothing)."""
    values = {
        "order_id": request.order_id,
        "customer_id": request.customer_id,
        "total": total,
        "currency": request.currency,
        "updated_at": datetime.now(UTC),
    }
    inserted = session.execute(_INSERT_ORDER, values).first()
    if inserted is not None:  # a new order: its CreateOrder saga starts in this transaction
        saga_starter.start(
            session,
            create_order,
            saga_id=request.order_id,
            data=OrderSagaData(
                order_id=request.order_id,
                customer_id=request.customer_id,
                amount_cents=int(total * 100),
                lines=[
                    OrderLineData(sku=line.sku, quantity=line.quantity) for line in request.lines
                ],
            ),
        )


@processor.handler(
    REQUESTS_ORDERS, event_type="com.example.requests.cancel_order", model=CancelOrder
)
def cancel_order(event: Event, unit: UnitOfWork) -> None:
    request: CancelOrder = unit.data
    status = _locked_status(unit, request.order_id)
    if status is None:
        raise Reject(f"order {request.order_id} does not exist")
    if status == "cancelled":
        return  # cancelling twice is the same as once
    if status == "approved":
        raise Reject(f"order {request.order_id} is approved and shipping: too late to cancel")
    unit.session.execute(
        update(orders)
        .where(orders.c.order_id == request.order_id)
        .values(status="cancelled", updated_at=datetime.now(UTC))
    )
    unit.emit(
        Event(
            source=SOURCE,
            type="com.example.orders.order_cancelled",
            subject=request.order_id,
            partitionkey=request.order_id,
            data={"order_id": request.order_id, "reason": request.reason},
        ),
        aggregate_type="order",
        aggregate_id=request.order_id,
        topic=ORDERS_EVENTS,
    )


@processor.handler(
    REQUESTS_CUSTOMERS,
    event_type="com.example.requests.register_customer",
    model=RegisterCustomer,
)
def register_customer(event: Event, unit: UnitOfWork) -> None:
    request: RegisterCustomer = unit.data
    dialect = postgresql if unit.session.get_bind().dialect.name == "postgresql" else sqlite
    unit.session.execute(
        dialect.insert(customers)
        .values(
            customer_id=request.customer_id,
            email=request.email,
            name=request.name,
            registered_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing()
    )


# --- the order service's part in the CreateOrder saga ------------------------------------------


def _locked_status(unit: UnitOfWork, order_id: str) -> str | None:
    """The order's status, its row locked until the transaction ends (PostgreSQL), so a
    cancellation and the saga's steps of one order never both act on what they read."""
    status = unit.session.execute(
        select(orders.c.status).where(orders.c.order_id == order_id).with_for_update()
    ).scalar_one_or_none()
    return None if status is None else str(status)


def _set_status(unit: UnitOfWork, order_id: str, status: str, *, unless: str | None = None) -> str:
    """Set the order's status; returns the status it had."""
    current = _locked_status(unit, order_id)
    if current is None:
        raise Refuse(f"order {order_id} does not exist")
    if current != unless:
        unit.session.execute(
            update(orders)
            .where(orders.c.order_id == order_id)
            .values(status=status, updated_at=datetime.now(UTC))
        )
    return str(current)


def _move(unit: UnitOfWork, order_id: str, expected: str, status: str, waiting: str) -> None:
    """Move the order from ``expected`` to ``status``; refuse (the saga compensates) when it
    is in any other state, e.g. cancelled while its saga ran."""
    # One statement in the usual case: the update checks the status and locks the row.
    moved = unit.session.execute(
        _MOVE,
        {
            "p_order_id": order_id,
            "p_expected": expected,
            "p_status": status,
            "p_updated_at": datetime.now(UTC),
        },
    ).first()
    if moved is None:
        current = _locked_status(unit, order_id)
        raise Refuse(f"order {order_id} is {current or 'unknown'}, not {waiting}")


@participant.command("ValidateOrder")
def validate_order(command: SagaCommand, unit: UnitOfWork) -> dict[str, Any]:
    _move(unit, command.data["order_id"], "placed", "approval_pending", "placed")
    return {}


@participant.command("RejectOrder")
def reject_order(command: SagaCommand, unit: UnitOfWork) -> dict[str, Any]:
    previous = _set_status(unit, command.data["order_id"], "rejected", unless="cancelled")
    return {"previous": previous}


@participant.command("ApproveOrder")
def approve_order(command: SagaCommand, unit: UnitOfWork) -> dict[str, Any]:
    _move(unit, command.data["order_id"], "approval_pending", "approved", "awaiting approval")
    return {}

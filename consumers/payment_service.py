"""The demo's payments: charges and refunds for the CreateOrder saga.

Run it with ``pipeline process consumers.payment_service:processor``. A charge above
``demo.decline_above_cents`` is declined (the saga compensates). A share of refunds
(``demo.flaky_refund_share``, chosen by order id) fails ``demo.refund_failures`` times before
it succeeds, so the saga's compensation retries show; a refund never happens twice (the
participant's log answers a repeated command with the first outcome).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.engine import Engine

from consumers.order_saga import chosen
from pipeline.processing import Processor, UnitOfWork
from pipeline.sagas.participant import Refuse, SagaCommand, SagaParticipant
from pipeline.settings import DemoSettings, PipelineSettings

__all__ = ["payments", "processor", "tables"]

tables = MetaData()
payments = Table(
    "demo_payments",
    tables,
    Column("payment_id", String(80), primary_key=True),
    Column("order_id", String(64), nullable=False, unique=True),
    Column("customer_id", String(64), nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # charged, refunded
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

processor = Processor("payment-service")
# Its handlers only touch the database: the commands of many sagas commit in one transaction.
participant = SagaParticipant(processor, "payments", group_commit=True)
_settings: dict[str, DemoSettings] = {}


@processor.on_start
def create_tables(database: Engine) -> None:
    tables.create_all(database)
    _settings["demo"] = PipelineSettings().demo


def _demo() -> DemoSettings:
    return _settings.get("demo") or DemoSettings()


@participant.command("ChargePayment")
def charge_payment(command: SagaCommand, unit: UnitOfWork) -> dict[str, Any]:
    amount = int(command.data["amount_cents"])
    if amount > _demo().decline_above_cents:
        raise Refuse(f"card declined: {amount / 100:.2f} is above the limit")
    payment_id = f"pay-{command.data['order_id']}"
    unit.session.execute(
        insert(payments).values(
            payment_id=payment_id,
            order_id=command.data["order_id"],
            customer_id=command.data["customer_id"],
            amount_cents=amount,
            status="charged",
            updated_at=datetime.now(UTC),
        )
    )
    return {"payment_id": payment_id}


@participant.command("RefundPayment")
def refund_payment(command: SagaCommand, unit: UnitOfWork) -> dict[str, Any]:
    order_id = command.data["order_id"]
    demo = _demo()
    if (
        chosen(order_id, demo.flaky_refund_share, "refund")
        and command.attempt <= demo.refund_failures
    ):
        raise Refuse(f"the card network is down (refund attempt {command.attempt})", retryable=True)
    amount = unit.session.execute(
        select(payments.c.amount_cents).where(payments.c.order_id == order_id)
    ).scalar_one()
    unit.session.execute(
        update(payments)
        .where(payments.c.order_id == order_id)
        .values(status="refunded", updated_at=datetime.now(UTC))
    )
    return {"refunded_cents": amount}

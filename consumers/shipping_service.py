"""The demo's shipping: schedules and cancels shipments for the CreateOrder saga.

Run it with ``pipeline process consumers.shipping_service:processor``. A share of orders
(``demo.slow_shipping_share``, chosen by order id) is answered only after the saga's shipping
timeout: the saga compensates on the timeout, and the late reply is counted and changes
nothing; the cancel that follows undoes the shipment, which did happen.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table, insert, update
from sqlalchemy.engine import Engine

from consumers.order_saga import SHIPPING_TIMEOUT_S, chosen
from pipeline.processing import Processor, UnitOfWork
from pipeline.sagas.participant import SagaCommand, SagaParticipant
from pipeline.settings import DemoSettings, PipelineSettings

__all__ = ["processor", "shipments", "tables"]

tables = MetaData()
shipments = Table(
    "demo_shipments",
    tables,
    Column("shipment_id", String(80), primary_key=True),
    Column("order_id", String(64), nullable=False, unique=True),
    Column("status", String(16), nullable=False),  # scheduled, cancelled
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

processor = Processor("shipping-service")
participant = SagaParticipant(processor, "shipping")
_settings: dict[str, DemoSettings] = {}
#: How long a slow shipment keeps the saga waiting: past its timeout.
SLOW_SHIPMENT_S = SHIPPING_TIMEOUT_S + 1.0


@processor.on_start
def create_tables(database: Engine) -> None:
    tables.create_all(database)
    _settings["demo"] = PipelineSettings().demo


@participant.command("ScheduleShipment")
def schedule_shipment(command: SagaCommand, unit: UnitOfWork) -> dict[str, Any]:
    order_id = command.data["order_id"]
    demo = _settings.get("demo") or DemoSettings()
    if chosen(order_id, demo.slow_shipping_share, "shipping"):
        time.sleep(SLOW_SHIPMENT_S)  # a courier system that answers too late
    shipment_id = f"ship-{order_id}"
    unit.session.execute(
        insert(shipments).values(
            shipment_id=shipment_id,
            order_id=order_id,
            status="scheduled",
            updated_at=datetime.now(UTC),
        )
    )
    return {"shipment_id": shipment_id}


@participant.command("CancelShipment")
def cancel_shipment(command: SagaCommand, unit: UnitOfWork) -> dict[str, Any]:
    unit.session.execute(
        update(shipments)
        .where(shipments.c.order_id == command.data["order_id"])
        .values(status="cancelled", updated_at=datetime.now(UTC))
    )
    return {"cancelled": True}

"""The demo's inventory: reserves stock for the CreateOrder saga (try / confirm / cancel).

Run it with ``pipeline process consumers.inventory_service:processor``. Each SKU starts with
``demo.stock_per_sku`` units (``PIPELINE_DEMO__STOCK_PER_SKU``); an order that needs more than
is available is refused ("out of stock") and its saga compensates. Stock never goes negative:
a reservation moves units from ``available`` to ``reserved`` in one statement that checks
``available >= quantity``, and the table has a check constraint besides.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.sql.dml import Update

from pipeline.processing import Processor, UnitOfWork
from pipeline.sagas.participant import Refuse, SagaCommand, SagaParticipant
from pipeline.settings import PipelineSettings

__all__ = ["processor", "reservations", "stock", "tables"]

tables = MetaData()
stock = Table(
    "demo_stock",
    tables,
    Column("sku", String(64), primary_key=True),
    Column("available", Integer, nullable=False),
    Column("reserved", Integer, nullable=False),
    Column("sold", Integer, nullable=False),
    #: The units the SKU started with: available + reserved + sold stays equal to it.
    Column("initial", Integer, nullable=False),
    CheckConstraint("available >= 0 AND reserved >= 0 AND sold >= 0", name="stock_not_negative"),
)
reservations = Table(
    "demo_reservations",
    tables,
    Column("order_id", String(64), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("quantity", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # reserved, confirmed, released
)

processor = Processor("inventory-service")
# Its handlers only touch the database: the commands of many sagas commit in one transaction.
participant = SagaParticipant(processor, "inventory", group_commit=True)
_stock_per_sku = {"units": 0}


@processor.on_start
def create_tables(database: Engine) -> None:
    tables.create_all(database)
    _stock_per_sku["units"] = PipelineSettings().demo.stock_per_sku


def _add_sku(unit: UnitOfWork, sku: str) -> None:
    # A SKU appears with its initial stock the first time an order names it.
    if unit.session.execute(select(stock.c.sku).where(stock.c.sku == sku)).first() is None:
        unit.session.execute(
            insert(stock).values(
                sku=sku,
                available=_stock_per_sku["units"],
                reserved=0,
                sold=0,
                initial=_stock_per_sku["units"],
            )
        )


# The statements of every reservation, built once (SQLAlchemy builds a statement and its cache
# key again on each call otherwise, which costs more than running it).
_RESERVE = (
    update(stock)
    .where(stock.c.sku == bindparam("p_sku"), stock.c.available >= bindparam("p_quantity"))
    .values(
        available=stock.c.available - bindparam("p_quantity"),
        reserved=stock.c.reserved + bindparam("p_quantity"),
    )
)
_RESERVATION = insert(reservations).values(
    order_id=bindparam("p_order_id"),
    sku=bindparam("p_sku"),
    quantity=bindparam("p_quantity"),
    status="reserved",
)


def _reserve(unit: UnitOfWork, sku: str, quantity: int) -> bool:
    """Move ``quantity`` units of ``sku`` from available to reserved; False when too few are
    available. One statement for a SKU seen before; a new SKU is added first."""
    values = {"p_sku": sku, "p_quantity": quantity}
    moved = unit.session.execute(_RESERVE, values)
    if moved.rowcount == 1:  # type: ignore[attr-defined]
        return True
    _add_sku(unit, sku)
    moved = unit.session.execute(_RESERVE, values)
    return bool(moved.rowcount == 1)  # type: ignore[attr-defined]


@participant.command("ReserveStock")
def reserve_stock(command: SagaCommand, unit: UnitOfWork) -> dict[str, Any]:
    order_id = command.data["order_id"]
    for sku, quantity in needed_per_sku(command.data["lines"]):
        if not _reserve(unit, sku, quantity):
            raise Refuse(f"out of stock: {sku} x{quantity}")
        unit.session.execute(
            _RESERVATION, {"p_order_id": order_id, "p_sku": sku, "p_quantity": quantity}
        )
    return {"reserved": len(command.data["lines"])}


def needed_per_sku(lines: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """The units an order needs of each SKU, sorted by SKU: lines of the same SKU add up (one
    reservation each, which its key allows once), and two orders reserving the same SKUs lock
    their rows in the same order."""
    needed: dict[str, int] = {}
    for line in lines:
        needed[line["sku"]] = needed.get(line["sku"], 0) + int(line["quantity"])
    return sorted(needed.items())


# Settling an order's reservations: they are marked in one statement that returns them, then
# the stock of their SKUs moves in one more (sorted by SKU, so two orders settling the same
# SKUs lock their rows in the same order). Built once, like the reservation's statements.
_SETTLE = (
    update(reservations)
    .where(reservations.c.order_id == bindparam("p_order_id"), reservations.c.status == "reserved")
    .values(status=bindparam("p_status"))
    .returning(reservations.c.sku, reservations.c.quantity)
)


def _from_reserved(to: str) -> Update:
    """The statement that moves ``p_quantity`` units of ``p_sku`` from reserved to ``to``."""
    return (
        update(stock)
        .where(stock.c.sku == bindparam("p_sku"))
        .values(
            {
                "reserved": stock.c.reserved - bindparam("p_quantity"),
                to: stock.c[to] + bindparam("p_quantity"),
            }
        )
    )


_SELL = _from_reserved("sold")
_RELEASE = _from_reserved("available")


def _settle(unit: UnitOfWork, order_id: str, status: str) -> int:
    """Mark the order's open reservations ``status`` (confirmed: sold; released: available
    again) and move their units; returns how many there were."""
    settled = unit.session.execute(_SETTLE, {"p_order_id": order_id, "p_status": status}).all()
    if settled:
        unit.session.execute(
            _SELL if status == "confirmed" else _RELEASE,
            [{"p_sku": sku, "p_quantity": quantity} for sku, quantity in sorted(settled)],
        )
    return len(settled)


@participant.command("ConfirmReservation")
def confirm_reservation(command: SagaCommand, unit: UnitOfWork) -> dict[str, Any]:
    return {"confirmed": _settle(unit, command.data["order_id"], "confirmed")}


@participant.command("ReleaseStock")
def release_stock(command: SagaCommand, unit: UnitOfWork) -> dict[str, Any]:
    return {"released": _settle(unit, command.data["order_id"], "released")}

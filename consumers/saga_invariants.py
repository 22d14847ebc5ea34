"""What must hold after the demo's CreateOrder sagas ran, whatever failed on the way.

Read from the shared demo database (the order service's, inventory's, payments', shipping's
tables and the saga rows); used by ``pipeline demo`` and the saga chaos test:

1. every saga ended: completed, compensated or resolved (none running or stuck);
2. stock never went negative and is conserved: per SKU ``available + reserved + sold`` is the
   stock it started with, and no units stay reserved once every saga ended;
3. money is conserved: charges minus refunds equal the total of the approved orders;
4. every approved order has a charge, a scheduled shipment and sold stock; no rejected or
   cancelled order keeps a charge, a shipment or sold stock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from consumers.inventory_service import reservations, stock
from consumers.orders_service import orders
from consumers.payment_service import payments
from consumers.shipping_service import shipments
from pipeline.plurals import counted
from pipeline.sagas.state import TERMINAL
from pipeline.sagas.store import sagas_table

__all__ = ["Invariant", "check_invariants"]


@dataclass(frozen=True)
class Invariant:
    name: str
    held: bool
    detail: str


def _scalar(connection: Connection, query: sa.Select[tuple[int]]) -> int:
    return int(connection.execute(query).scalar_one() or 0)


def check_invariants(
    connection: Connection, *, order_ids: list[str] | None = None
) -> list[Invariant]:
    """The four checks of the module docstring, over every order in the database, or over the
    sagas, payments, orders and stock of ``order_ids`` only (one demo run's, when several runs
    share the database; the saga id is the order id): then stock is checked over the SKUs those
    orders reserved, so units an earlier, interrupted run left reserved do not count."""
    checks: list[Invariant] = []

    def only(query: Any, column: Any) -> Any:
        return query if order_ids is None else query.where(column.in_(order_ids))

    def only_skus(query: Any) -> Any:
        if order_ids is None:
            return query
        reserved_by_them = sa.select(reservations.c.sku).where(
            reservations.c.order_id.in_(order_ids)
        )
        return query.where(stock.c.sku.in_(reserved_by_them))

    counts = {
        status: int(n)
        for status, n in connection.execute(
            only(
                sa.select(sagas_table.c.status, sa.func.count()).group_by(sagas_table.c.status),
                sagas_table.c.saga_id,
            )
        ).all()
    }
    open_sagas = {state: n for state, n in counts.items() if state not in TERMINAL}
    checks.append(
        Invariant(
            "every saga ended (completed, compensated or resolved)",
            not open_sagas,
            ", ".join(f"{n:,} {state}" for state, n in sorted(counts.items())) or "no sagas",
        )
    )

    negative = _scalar(
        connection,
        only_skus(
            sa.select(sa.func.count())
            .select_from(stock)
            .where(sa.or_(stock.c.available < 0, stock.c.reserved < 0, stock.c.sold < 0))
        ),
    )
    unbalanced = _scalar(
        connection,
        only_skus(
            sa.select(sa.func.count())
            .select_from(stock)
            .where(stock.c.available + stock.c.reserved + stock.c.sold != stock.c.initial)
        ),
    )
    reserved = _scalar(
        connection, only_skus(sa.select(sa.func.coalesce(sa.func.sum(stock.c.reserved), 0)))
    )
    skus = _scalar(connection, only_skus(sa.select(sa.func.count()).select_from(stock)))
    checks.append(
        Invariant(
            "stock never negative and conserved",
            negative == 0 and unbalanced == 0 and (reserved == 0 or bool(open_sagas)),
            f"{counted(skus, 'SKU')}, {negative} negative, {unbalanced} unbalanced, "
            f"{counted(reserved, 'unit')} still reserved",
        )
    )

    paid = sa.select(sa.func.coalesce(sa.func.sum(payments.c.amount_cents), 0))
    charged = _scalar(connection, only(paid, payments.c.order_id))
    refunded = _scalar(
        connection, only(paid.where(payments.c.status == "refunded"), payments.c.order_id)
    )
    approved_total = _scalar(
        connection,
        only(
            sa.select(sa.func.coalesce(sa.func.sum(orders.c.total * 100), 0)).where(
                orders.c.status == "approved"
            ),
            orders.c.order_id,
        ),
    )
    checks.append(
        Invariant(
            "money conserved: charges - refunds = total of approved orders",
            charged - refunded == approved_total,
            f"{charged / 100:,.2f} - {refunded / 100:,.2f} = {(charged - refunded) / 100:,.2f}; "
            f"approved {approved_total / 100:,.2f}",
        )
    )

    approved = only(
        sa.select(orders.c.order_id).where(orders.c.status == "approved"), orders.c.order_id
    )
    not_approved = only(
        sa.select(orders.c.order_id).where(orders.c.status.in_(["rejected", "cancelled"])),
        orders.c.order_id,
    )
    checks.append(_order_effects(connection, approved, not_approved))
    return checks


def _order_effects(
    connection: Connection, approved: sa.Select[tuple[str]], rejected: sa.Select[tuple[str]]
) -> Invariant:
    approved_ids = set(connection.execute(approved).scalars())
    rejected_ids = set(connection.execute(rejected).scalars())
    charged = set(
        connection.execute(
            sa.select(payments.c.order_id).where(payments.c.status == "charged")
        ).scalars()
    )
    shipped = set(
        connection.execute(
            sa.select(shipments.c.order_id).where(shipments.c.status == "scheduled")
        ).scalars()
    )
    sold = set(
        connection.execute(
            sa.select(reservations.c.order_id).where(reservations.c.status == "confirmed")
        ).scalars()
    )
    missing = len(approved_ids - charged) + len(approved_ids - shipped) + len(approved_ids - sold)
    leftover = len(rejected_ids & charged) + len(rejected_ids & shipped) + len(rejected_ids & sold)
    return Invariant(
        "approved orders charged, shipped and sold; rejected and cancelled ones neither",
        missing == 0 and leftover == 0,
        f"{len(approved_ids):,} approved, {len(rejected_ids):,} rejected or cancelled; "
        f"{missing} missing effects, {leftover} effects left on rejected orders",
    )

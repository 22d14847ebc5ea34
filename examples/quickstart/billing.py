"""The quick start's processor: it records issued invoices in a table of its own.

Run it from the repository's root folder (``pipeline process`` imports the module from the
current folder)::

    pipeline process examples.quickstart.billing:processor

Each ``com.example.billing.invoice_issued`` event on ``billing.invoices`` becomes a row of
``billing_invoices``. The row, the inbox row that marks the event as done, and nothing else
commit in one transaction, so a redelivered event is skipped instead of recorded twice. An
invoice whose amount is not positive is refused with :class:`Reject`: it goes to
``billing.invoices.dlq`` at once, with the reason, and the processor goes on.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel
from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.engine import Engine

from pipeline.envelope import Event
from pipeline.processing import Processor, Reject, UnitOfWork

TOPIC = "billing.invoices"
INVOICE_ISSUED = "com.example.billing.invoice_issued"

log = logging.getLogger("billing")

# The service's own table: created by the processor when it starts (see create_tables).
tables = MetaData()
invoices = Table(
    "billing_invoices",
    tables,
    Column("invoice_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
)


class InvoiceIssued(BaseModel):
    """The data of an ``invoice_issued`` event; data that does not fit is dead-lettered."""

    invoice_id: str
    customer_id: str
    amount_cents: int
    currency: str


# The processor's name is its Kafka consumer group and its service name in the logs.
processor = Processor("invoice-recorder")


@processor.on_start
def create_tables(database: Engine) -> None:
    tables.create_all(database)


@processor.handler(TOPIC, event_type=INVOICE_ISSUED, model=InvoiceIssued)
def record_invoice(event: Event, unit: UnitOfWork) -> None:
    invoice: InvoiceIssued = unit.data
    if invoice.amount_cents <= 0:
        raise Reject(f"invoice {invoice.invoice_id}: the amount must be positive")
    unit.session.execute(invoices.insert().values(**invoice.model_dump()))
    log.info(
        "invoice %s recorded: %d cents %s",
        invoice.invoice_id,
        invoice.amount_cents,
        invoice.currency,
    )

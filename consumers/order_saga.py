"""The demo's CreateOrder saga: the order service starts it for each PlaceOrder.

1. ``validate_order`` on the order service (compensation: reject the order);
2. ``reserve_stock`` on inventory, try / confirm / cancel: reserve now, make the reservation
   final once the saga succeeded, release it otherwise;
3. ``charge_payment`` on payments (compensation: refund);
4. ``schedule_shipping`` on shipping (compensation: cancel the shipment);
5. ``approve_order`` on the order service: the last step, the saga's pivot.

``pipeline saga graph CreateOrder`` draws it. The orchestrator that runs it is
``consumers/saga_orchestrator.py``.
"""

from __future__ import annotations

import zlib

from pydantic import BaseModel, Field

from pipeline.sagas import Call, SagaDefinition, SagaRegistry, Step, tcc

__all__ = [
    "SHIPPING_TIMEOUT_S",
    "OrderLineData",
    "OrderSagaData",
    "chosen",
    "create_order",
    "registry",
]

#: The shipping step's timeout; the demo's slow shipments answer after it. The other steps
#: allow a minute: a timeout must stay above the queueing a burst of orders causes, or the
#: saga gives up on replies that are merely waiting in line.
SHIPPING_TIMEOUT_S = 30.0
STEP_TIMEOUT_S = 60.0


def chosen(order_id: str, share: float, salt: str) -> bool:
    """Whether ``order_id`` is among ``share`` of all orders for an injected failure (the same
    answer in every process and run)."""
    return zlib.crc32(f"{salt}:{order_id}".encode()) % 10_000 < share * 10_000


class OrderLineData(BaseModel):
    sku: str
    quantity: int


class OrderSagaData(BaseModel):
    order_id: str
    customer_id: str
    amount_cents: int = Field(ge=0)
    lines: list[OrderLineData]
    payment_id: str | None = None
    shipment_id: str | None = None


def _order(data: OrderSagaData) -> dict[str, object]:
    return {"order_id": data.order_id}


def _lines(data: OrderSagaData) -> dict[str, object]:
    return {"order_id": data.order_id, "lines": [line.model_dump() for line in data.lines]}


create_order: SagaDefinition[OrderSagaData] = SagaDefinition(
    "CreateOrder",
    version=1,
    data_model=OrderSagaData,
    description="Validate, reserve stock, charge, schedule shipping, approve.",
    steps=[
        Step(
            "validate_order",
            participant="orders",
            action=lambda d: Call("ValidateOrder", _order(d)),
            compensation=lambda d: Call("RejectOrder", _order(d)),
            timeout_s=STEP_TIMEOUT_S,
            compensation_attempts=20,
        ),
        tcc(
            "reserve_stock",
            participant="inventory",
            try_=lambda d: Call("ReserveStock", _lines(d)),
            confirm=lambda d: Call("ConfirmReservation", _order(d)),
            cancel=lambda d: Call("ReleaseStock", _order(d)),
            timeout_s=STEP_TIMEOUT_S,
            retries=2,
            compensation_attempts=20,
        ),
        Step(
            "charge_payment",
            participant="payments",
            action=lambda d: Call(
                "ChargePayment",
                {
                    "order_id": d.order_id,
                    "customer_id": d.customer_id,
                    "amount_cents": d.amount_cents,
                },
            ),
            on_success=lambda d, reply: d.model_copy(update={"payment_id": reply["payment_id"]}),
            compensation=lambda d: Call(
                "RefundPayment", {"order_id": d.order_id, "payment_id": d.payment_id}
            ),
            timeout_s=STEP_TIMEOUT_S,
            compensation_attempts=20,
            compensation_backoff_s=0.5,
        ),
        Step(
            "schedule_shipping",
            participant="shipping",
            action=lambda d: Call("ScheduleShipment", _lines(d)),
            on_success=lambda d, reply: d.model_copy(update={"shipment_id": reply["shipment_id"]}),
            compensation=lambda d: Call("CancelShipment", _order(d)),
            timeout_s=SHIPPING_TIMEOUT_S,
            compensation_attempts=20,
        ),
        Step(
            "approve_order",
            participant="orders",
            action=lambda d: Call("ApproveOrder", _order(d)),
            timeout_s=STEP_TIMEOUT_S,
            retries=5,
        ),
    ],
)

registry = SagaRegistry([create_order])

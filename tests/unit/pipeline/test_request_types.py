"""The request models: what the gateway, ``pipeline produce --type`` and the processors accept."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.request_types import PlaceOrder, RequestValidationError, request_type


def _order(quantity: Any = 2, unit_price: Any = "9.90") -> dict[str, Any]:
    return {
        "order_id": "order-1",
        "customer_id": "c-1",
        "lines": [{"sku": "s-1", "quantity": quantity, "unit_price": unit_price}],
    }


@pytest.mark.parametrize("quantity", [True, "3", 2.0, 2.5, None])
def test_a_quantity_that_is_not_a_json_integer_is_refused(quantity: Any) -> None:
    with pytest.raises(RequestValidationError, match=r"lines\.0\.quantity"):
        request_type("place_order").validate(_order(quantity=quantity))


@pytest.mark.parametrize(
    ("given", "written"),
    [("1e2", "100.00"), (100.0, "100.00"), ("0.1", "0.10"), ("9.90", "9.90"), (3, "3.00")],
)
def test_a_price_is_written_fixed_point_with_two_decimals(given: Any, written: str) -> None:
    order = request_type("place_order").validate(_order(unit_price=given))
    data = order.model_dump(mode="json")
    assert data["lines"][0]["unit_price"] == written
    assert PlaceOrder.model_validate(data) == order  # what a processor reads back is the same


@pytest.mark.parametrize("unit_price", [True, "NaN", "0.001", "10000000000", 0])
def test_a_price_that_is_not_an_amount_of_money_is_refused(unit_price: Any) -> None:
    with pytest.raises(RequestValidationError, match=r"lines\.0\.unit_price"):
        request_type("place_order").validate(_order(unit_price=unit_price))

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


# ---- control characters ---------------------------------------------------------------------

CONTROLS = "must not contain control characters (U+0000-U+001F, U+007F-U+009F)"


def _customer(**fields: Any) -> dict[str, Any]:
    return {"customer_id": "c-1", "email": "ann@example.com", "name": "Ann", **fields}


def _refusal(name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(RequestValidationError) as caught:
        request_type(name).validate(data)
    return caught.value.errors


@pytest.mark.parametrize("control", ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9f", "\n"])
@pytest.mark.parametrize("field", ["name", "email"])
def test_a_control_character_in_a_customers_text_is_refused_naming_the_field(
    field: str, control: str
) -> None:
    # A NUL in a name was taken, and the orders service failed on it five times
    # (PostgreSQL text cannot hold NUL) before dead-lettering it.
    value = {"name": f"An{control}n", "email": f"an{control}n@example.com"}[field]

    [error] = _refusal("register_customer", _customer(**{field: value}))

    assert error["field"] == field
    if field == "name" or control not in "\n\x85":  # whitespace: the email's pattern refuses it
        assert error["message"] == f"{CONTROLS}, found U+{ord(control):04X} at offset 2"


@pytest.mark.parametrize("control", ["\x00", "\x08", "\x0b", "\x0c", "\x1f", "\x7f", "\x80"])
def test_a_control_character_in_a_cancellation_reason_is_refused(control: str) -> None:
    [error] = _refusal("cancel_order", {"order_id": "o-1", "reason": f"no{control}pe"})

    assert error == {
        "field": "reason",
        "message": f"{CONTROLS} other than tab and line breaks, found U+{ord(control):04X} "
        "at offset 2",
    }


def test_a_reason_of_several_lines_is_taken() -> None:
    reason = "changed my mind\r\n\tsorry\nreally"

    request = request_type("cancel_order").validate({"order_id": "o-1", "reason": reason})

    assert request.model_dump()["reason"] == reason


@pytest.mark.parametrize("control", ["\x00", "\x1b", "\x7f", "\x9f"])
@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("register_customer", "customer_id"),
        ("cancel_order", "order_id"),
        ("place_order", "customer_id"),
        ("place_order", "lines.0.sku"),
    ],
)
def test_an_id_with_a_control_character_is_refused_naming_it(
    name: str, field: str, control: str
) -> None:
    data: dict[str, Any] = {
        "register_customer": _customer(),
        "cancel_order": {"order_id": "o-1", "reason": "late"},
        "place_order": _order(),
    }[name]
    if field == "lines.0.sku":
        data["lines"][0]["sku"] = f"s{control}1"
    else:
        data[field] = f"i{control}d"

    [error] = _refusal(name, data)

    assert error["field"] == field


def test_text_without_control_characters_is_taken_as_it_was() -> None:
    # Not control characters: a no-break space, a soft hyphen, a zero-width space, accents.
    name = "Zoë\xa0de\xadla\u200bRosa 😀"

    request = request_type("register_customer").validate(_customer(name=name))

    assert request.model_dump()["name"] == name

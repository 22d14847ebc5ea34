"""The request types: one pydantic model each, shared by the gateway, the CLI and the processors.

A request type knows its name in URLs (``place_order``), its CloudEvents type, the topic it
travels on and the field that keys it. Requests about one entity share a topic and a key, so
they stay in order: PlaceOrder and CancelOrder both go to ``requests.orders`` keyed by order id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from pipeline.errors import PipelineError
from pipeline.topics.catalogue import REQUESTS_CUSTOMERS, REQUESTS_ORDERS

#: An entity's id: its pattern leaves no room for a control character.
Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]

#: What a control character is (Unicode's Cc: U+0000-U+001F, U+007F-U+009F), as the envelope's
#: text attributes say it.
_CONTROLS_TEXT = "control characters (U+0000-U+001F, U+007F-U+009F)"
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
#: The same but tab, line feed and carriage return: the line breaks of a text of several lines.
_CONTROLS_BUT_LINE_BREAKS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _refusing(controls: re.Pattern[str], what: str) -> AfterValidator:
    """A check that a text holds none of ``controls`` (``what``: their name in the error).

    A NUL was taken and reached the orders service, whose PostgreSQL refuses it in a text
    column: the request failed there five times and went to the dead letters instead of a 422.
    """

    def check(value: str) -> str:
        found = controls.search(value)
        if found is None:
            return value
        raise PydanticCustomError(
            "control_characters",
            "must not contain {what}, found U+{code} at offset {offset}",
            {"what": what, "code": f"{ord(found.group()):04X}", "offset": found.start()},
        )

    return AfterValidator(check)


#: Text of one line (a name, an address): no control character at all.
Line = Annotated[str, _refusing(_CONTROLS, _CONTROLS_TEXT)]
#: Free text (a reason): no control character but tab and line breaks.
Text = Annotated[
    str,
    _refusing(_CONTROLS_BUT_LINE_BREAKS, f"{_CONTROLS_TEXT} other than tab and line breaks"),
]

_CENTS = Decimal("0.01")


def _money_text(value: Decimal) -> str:
    """A price as its events carry it: fixed-point with two decimals (``"100.00"``, never the
    ``"1E+2"`` a ``"1e2"`` in the request would otherwise give every consumer to parse)."""
    return format(value.quantize(_CENTS), "f")


#: A count of items: a JSON integer. Strict, so that ``true``, ``"3"`` or ``2.5`` are refused
#: instead of becoming 1, 3 or an error far from the request.
Quantity = Annotated[StrictInt, Field(gt=0, le=10_000)]
#: An amount of money: a JSON number or a decimal string, at most 10 digits before the point and
#: 2 after; written in events as a fixed-point string with two decimals.
Money = Annotated[
    Decimal,
    Field(gt=0, max_digits=12, decimal_places=2),
    PlainSerializer(_money_text, return_type=str, when_used="json"),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class OrderLine(_Request):
    sku: Identifier
    quantity: Quantity
    unit_price: Money


class PlaceOrder(_Request):
    """A customer orders items; starts the order saga."""

    order_id: Identifier
    customer_id: Identifier
    lines: list[OrderLine] = Field(min_length=1, max_length=100)
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")


class CancelOrder(_Request):
    """The customer withdraws an order that has not shipped."""

    order_id: Identifier
    reason: Text = Field(min_length=1, max_length=500)


class RegisterCustomer(_Request):
    """A new customer account (the request type that is not about orders)."""

    customer_id: Identifier
    email: Line = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
    name: Line = Field(min_length=1, max_length=200)


@dataclass(frozen=True)
class RequestType:
    name: str
    model: type[BaseModel]
    topic: str
    key_field: str
    event_type: str

    def validate(self, data: Any) -> BaseModel:
        """The request as its model; :class:`RequestValidationError` when it does not fit."""
        try:
            return self.model.model_validate(data)
        except ValidationError as error:
            raise RequestValidationError(self.name, error) from None

    def key_of(self, request: BaseModel) -> str:
        return str(getattr(request, self.key_field))


class UnknownRequestType(PipelineError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown request type {name!r}; known: {', '.join(REQUEST_TYPES)}")


class RequestValidationError(PipelineError):
    """A request that does not fit its model; ``errors`` are pydantic's, ``str()`` one line."""

    def __init__(self, name: str, error: ValidationError) -> None:
        self.errors = [
            {"field": ".".join(str(p) for p in item["loc"]), "message": item["msg"]}
            for item in error.errors(include_url=False)
        ]
        summary = "; ".join(f"{e['field'] or '(body)'}: {e['message']}" for e in self.errors[:3])
        super().__init__(f"not a valid {name}: {summary}")


def _type(name: str, model: type[BaseModel], topic: str, key_field: str) -> RequestType:
    return RequestType(name, model, topic, key_field, f"com.example.requests.{name}")


REQUEST_TYPES: dict[str, RequestType] = {
    request.name: request
    for request in (
        _type("place_order", PlaceOrder, REQUESTS_ORDERS, "order_id"),
        _type("cancel_order", CancelOrder, REQUESTS_ORDERS, "order_id"),
        _type("register_customer", RegisterCustomer, REQUESTS_CUSTOMERS, "customer_id"),
    )
}
_BY_EVENT_TYPE = {request.event_type: request for request in REQUEST_TYPES.values()}


def request_type(name: str) -> RequestType:
    """The request type by its name (``place_order``) or CloudEvents type."""
    found = REQUEST_TYPES.get(name) or _BY_EVENT_TYPE.get(name)
    if found is None:
        raise UnknownRequestType(name)
    return found

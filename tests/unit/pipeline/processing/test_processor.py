"""Declaring a processor: handler registration, routing by event type, valid names."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from pipeline.envelope import Event
from pipeline.errors import PipelineError
from pipeline.processing import Processor, UnitOfWork


class PlaceOrder(BaseModel):
    order_id: str


def place(event: Event, unit: UnitOfWork) -> None: ...


def anything(event: Event, unit: UnitOfWork) -> None: ...


def test_handler_decorator_registers_and_returns_the_function() -> None:
    orders = Processor("orders")

    registered = orders.handler("requests.orders", event_type="PlaceOrder", model=PlaceOrder)(place)

    assert registered is place
    route = orders.route("requests.orders", "PlaceOrder")
    assert route is not None
    assert (route.handler, route.model, route.name) == (place, PlaceOrder, "place")


def test_topics_are_the_sorted_distinct_topics_of_the_handlers() -> None:
    orders = Processor("orders")
    orders.handler("requests.payments")(anything)
    orders.handler("requests.orders", event_type="PlaceOrder")(place)
    orders.handler("requests.orders", event_type="CancelOrder")(place)

    assert orders.topics == ["requests.orders", "requests.payments"]


def test_a_second_handler_for_the_same_topic_and_type_is_an_error() -> None:
    orders = Processor("orders")
    orders.handler("requests.orders", event_type="PlaceOrder")(place)

    with pytest.raises(PipelineError, match="already has a handler for event type 'PlaceOrder'"):
        orders.handler("requests.orders", event_type="PlaceOrder")(anything)


def test_a_second_catch_all_for_the_same_topic_is_an_error() -> None:
    orders = Processor("orders")
    orders.handler("requests.orders")(anything)

    with pytest.raises(PipelineError, match="already has a handler for every event type"):
        orders.handler("requests.orders")(place)


def test_the_same_type_on_another_topic_is_a_separate_handler() -> None:
    orders = Processor("orders")
    orders.handler("requests.orders", event_type="PlaceOrder")(place)
    orders.handler("requests.legacy", event_type="PlaceOrder")(anything)

    legacy = orders.route("requests.legacy", "PlaceOrder")
    assert legacy is not None and legacy.handler is anything


def test_route_prefers_the_event_types_own_handler_over_the_catch_all() -> None:
    orders = Processor("orders")
    orders.handler("requests.orders")(anything)
    orders.handler("requests.orders", event_type="PlaceOrder")(place)

    own = orders.route("requests.orders", "PlaceOrder")
    other = orders.route("requests.orders", "CancelOrder")

    assert own is not None and own.handler is place
    assert other is not None and other.handler is anything


def test_route_without_a_matching_handler_is_none() -> None:
    orders = Processor("orders")
    orders.handler("requests.orders", event_type="PlaceOrder")(place)

    assert orders.route("requests.orders", "CancelOrder") is None
    assert orders.route("requests.payments", "PlaceOrder") is None


@pytest.mark.parametrize("name", ["orders", "orders-service", "svc.orders_v2", "A1"])
def test_valid_names_are_the_consumer_group(name: str) -> None:
    assert Processor(name).name == name


@pytest.mark.parametrize("name", ["", "orders service", "orders/v2", "é:x", "a*"])
def test_invalid_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="must be non-empty"):
        Processor(name)

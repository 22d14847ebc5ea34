"""Declaring a processor: handler registration, routing by event type, valid names, async
handlers and the writes of their unit of work."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from pipeline.envelope import Event
from pipeline.errors import PipelineError
from pipeline.processing import Processor, Record, UnitOfWork


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


# --- async handlers -----------------------------------------------------------------------------


async def place_async(event: Event, unit: UnitOfWork) -> None: ...


def test_route_of_an_async_def_handler_is_async_and_of_a_def_handler_is_not() -> None:
    orders = Processor("orders")
    orders.handler("requests.orders", event_type="PlaceOrder")(place_async)
    orders.handler("requests.orders", event_type="CancelOrder")(place)

    async_route = orders.route("requests.orders", "PlaceOrder")
    sync_route = orders.route("requests.orders", "CancelOrder")

    assert async_route is not None and async_route.is_async
    assert sync_route is not None and not sync_route.is_async


def test_has_async_handlers_is_true_once_one_handler_is_async() -> None:
    orders = Processor("orders")
    orders.handler("requests.orders", event_type="CancelOrder")(place)
    assert not orders.has_async_handlers

    orders.handler("requests.orders", event_type="PlaceOrder")(place_async)
    assert orders.has_async_handlers


def unit_with(session: Session | None) -> UnitOfWork:
    return UnitOfWork(
        _session=session,
        event=Event(source="/tests", type="PlaceOrder", data={}),
        record=Record("requests.orders", 0, 0, None, b"{}"),
        consumer_group="orders",
    )


@pytest.fixture
def session() -> Iterator[Session]:
    with Session(create_engine("sqlite://")) as session:
        yield session


def test_write_of_a_sync_handlers_unit_runs_at_once_in_its_session(session: Session) -> None:
    unit = unit_with(session)
    given: list[Session] = []

    unit.write(given.append)

    assert given == [session]
    assert not unit.has_writes


def test_write_of_an_async_handlers_unit_waits_for_apply_writes_and_runs_in_order(
    session: Session,
) -> None:
    unit = unit_with(None)
    ran: list[tuple[str, Session]] = []

    unit.write(lambda s: ran.append(("first", s)))
    unit.write(lambda s: ran.append(("second", s)))

    assert ran == []
    assert unit.has_writes

    unit.apply_writes(session)

    assert ran == [("first", session), ("second", session)]


def test_apply_writes_keeps_the_writes_so_a_second_transaction_runs_them_again(
    session: Session,
) -> None:
    # A group transaction that rolled back: the event's own transaction needs them again.
    unit = unit_with(None)
    ran: list[str] = []
    unit.write(lambda s: ran.append("first"))
    unit.write(lambda s: ran.append("second"))
    unit.apply_writes(session)

    unit.apply_writes(session)

    assert ran == ["first", "second", "first", "second"]
    assert unit.has_writes


def test_session_of_an_async_handlers_unit_raises_naming_unit_write() -> None:
    unit = unit_with(None)

    with pytest.raises(PipelineError, match=r"async handler has no session.*unit\.write\("):
        unit.session  # noqa: B018 (the access is the test)


def test_session_of_a_sync_handlers_unit_is_its_session(session: Session) -> None:
    assert unit_with(session).session is session

"""Declaring a processor: which plain function handles which topic and event type.

::

    orders = Processor("orders-service")

    @orders.handler("requests.orders", event_type="PlaceOrder", model=PlaceOrder)
    def place_order(event: Event, unit: UnitOfWork) -> None:
        unit.session.execute(insert(orders_table).values(...))   # the effect
        unit.emit(order_placed_event, aggregate_type="order", aggregate_id=...)  # the outbox

A handler returns nothing or raises: :class:`Reject` dead-letters the event at once, any other
exception is retried with backoff, then dead-lettered. Its effects, the inbox row and the
events it emits commit in one transaction, after it returns. Handlers stay plain functions:
test them with :class:`pipeline.processing.driver.ProcessorTestDriver`, no broker needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.envelope import Event
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.processing.records import Record

__all__ = ["Handler", "Processor", "Reject", "Route", "UnitOfWork"]


class Reject(Exception):
    """Raised by a handler: this event can never succeed; dead-letter it now, no retries."""


@dataclass
class UnitOfWork:
    """What a handler gets besides the event: its transaction and a way to publish."""

    session: Session
    event: Event
    record: Record
    consumer_group: str
    #: ``event.data`` validated by the handler's model, when it declared one.
    data: Any = None
    _emitted: list[Event] = field(default_factory=list)

    def emit(
        self,
        event: Event,
        *,
        aggregate_type: str,
        aggregate_id: str,
        topic: str | None = None,
    ) -> Event:
        """Publish ``event`` through the transactional outbox, in this unit's transaction.

        The handled event's correlation id is carried over (or its id, when it had none), and
        it becomes the causation id, unless ``event`` sets them itself.
        """
        from pipeline.outbox import add_to_outbox

        linked = event.model_copy(
            update={
                "correlationid": event.correlationid or self.event.correlationid or self.event.id,
                "causationid": event.causationid or self.event.id,
            }
        )
        add_to_outbox(
            self.session,
            linked,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            topic=topic,
        )
        self._emitted.append(linked)
        return linked


Handler = Callable[[Event, UnitOfWork], None]


@dataclass(frozen=True)
class Route:
    handler: Handler
    model: type[BaseModel] | None = None

    @property
    def name(self) -> str:
        return getattr(self.handler, "__qualname__", repr(self.handler))


class Processor:
    """A named set of handlers; its name is the Kafka consumer group."""

    def __init__(self, name: str) -> None:
        if not name or not all(c.isalnum() or c in "._-" for c in name):
            raise ValueError(
                f"processor name {name!r} must be non-empty and use only letters, digits, "
                "'.', '_' and '-' (it is the consumer group id)"
            )
        self.name = name
        self._routes: dict[tuple[str, str | None], Route] = {}
        self.startup_hooks: list[Callable[[Engine], None]] = []

    @property
    def topics(self) -> list[str]:
        return sorted({topic for topic, _ in self._routes})

    def handler(
        self,
        topic: str,
        *,
        event_type: str | None = None,
        model: type[BaseModel] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register a handler for ``topic`` (only events of ``event_type`` when given).

        ``model``: a pydantic model ``event.data`` must fit; an event whose data does not is
        dead-lettered as ``schema_invalid`` without calling the handler.
        """

        def register(function: Handler) -> Handler:
            route_key = (topic, event_type)
            if route_key in self._routes:
                what = f"event type {event_type!r}" if event_type else "every event type"
                raise PipelineError(f"{self.name}: {topic} already has a handler for {what}")
            self._routes[route_key] = Route(function, model)
            return function

        return register

    def on_start(self, hook: Callable[[Engine], None]) -> Callable[[Engine], None]:
        """Register ``hook(database)`` to run once before consuming (e.g. create the service's
        own tables); the runtime and the test driver call it after migrating the database."""
        self.startup_hooks.append(hook)
        return hook

    def start(self, database: Engine) -> None:
        for hook in self.startup_hooks:
            hook(database)

    def route(self, topic: str, event_type: str) -> Route | None:
        """The handler for this event: its type's own, else the topic's catch-all."""
        return self._routes.get((topic, event_type)) or self._routes.get((topic, None))

"""Declaring a processor: which plain function handles which topic and event type.

::

    orders = Processor("orders-service")

    @orders.handler("requests.orders", event_type="PlaceOrder", model=PlaceOrder)
    def place_order(event: Event, unit: UnitOfWork) -> None:
        unit.session.execute(insert(orders_table).values(...))   # the effect
        unit.emit(order_placed_event, aggregate_type="order", aggregate_id=...)  # the outbox

A handler returns nothing or raises: :class:`Reject` dead-letters the event at once,
:class:`NotYet` tries it again without limit (what it needs is not here yet), any other
exception is retried with backoff, then dead-lettered. Its effects, the inbox row and the
events it emits commit in one transaction, after it returns. Handlers stay plain functions:
test them with :class:`pipeline.processing.driver.ProcessorTestDriver`, no broker needed.

A handler may be ``async def``: it then runs on the processor's event loop, many at once, and
the runtime commits the inbox rows and effects of many events in one transaction (group
commit). It has no session while it runs (an open transaction across its awaits would hold
locks for as long as it waits): it hands its database writes to :meth:`UnitOfWork.write`, which
runs them in the event's transaction after it returns (the events it emits go into the outbox
after those writes, with the events of the rest of its group in one statement)::

    @orders.handler("requests.orders", event_type="PlaceOrder", model=PlaceOrder)
    async def place_order(event: Event, unit: UnitOfWork) -> None:
        price = await pricing.quote(unit.data.sku)               # awaited I/O
        unit.write(lambda session: session.execute(insert(orders_table).values(...)))
        unit.emit(order_placed_event, aggregate_type="order", aggregate_id=...)
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.envelope import Event
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.outbox.table import Outbox
    from pipeline.processing.read_through import TopicProgress
    from pipeline.processing.records import Record

__all__ = [
    "BatchWrite",
    "Handler",
    "NotYet",
    "PeriodicTask",
    "Processor",
    "Reject",
    "Route",
    "UnitOfWork",
]


class Reject(Exception):
    """Raised by a handler: this event can never succeed; dead-letter it now, no retries."""


class NotYet(Exception):
    """Raised by a handler (or a write it left): this event cannot be handled *yet*, through
    no fault of its own: what it needs is not here yet (a saga version this orchestrator's
    registry lacks during a rolling deploy). It is tried again without limit, with the
    backoff of a database outage, and never dead-lettered; its key's later events wait behind
    it. Its message says what it waits for: it is logged. A handler that raises it for ever
    holds its key (and its partition's commits) for ever."""


Write = Callable[[Session], object]
#: A write that many events of a group make in one go: ``batch(session, items)``.
BatchWrite = Callable[[Session, list[Any]], object]


@dataclass
class UnitOfWork:
    """What a handler gets besides the event: its transaction and a way to publish.

    ``_session`` is ``None`` while an ``async`` handler runs: its writes wait in ``_writes``
    until :meth:`apply_writes` runs them in the event's transaction.
    """

    _session: Session | None
    event: Event
    record: Record
    consumer_group: str
    #: ``event.data`` validated by the handler's model, when it declared one.
    data: Any = None
    #: Where :meth:`emit` writes, with its routes: the runtime's, from ``settings.outbox``
    #: (``pipeline process``, the test driver); ``None``: the built-in default routes.
    outbox: Outbox | None = None
    _emitted: list[Event] = field(default_factory=list)
    _writes: list[Write] = field(default_factory=list)
    _batched: list[tuple[BatchWrite, Any]] = field(default_factory=list)

    @property
    def session(self) -> Session:
        """The event's transaction (a synchronous handler's; see :meth:`write` for async)."""
        if self._session is None:
            raise PipelineError(
                "an async handler has no session while it runs: hand database writes to "
                "unit.write(lambda session: ...), which runs them in the event's transaction"
            )
        return self._session

    def write(self, write: Write) -> None:
        """Run ``write(session)`` in the event's transaction: now for a synchronous handler,
        after it returns for an ``async`` one (in the order the writes were given)."""
        if self._session is not None:
            write(self._session)
        else:
            self._writes.append(write)

    def write_batched(self, batch: BatchWrite, item: object) -> None:
        """Run ``batch(session, [item])`` in the event's transaction, after its other writes;
        in a group commit, once for the items of all the units of the group that gave this
        ``batch`` (the same object), in the units' order (a unit's own items in the order
        given): a write that costs statements for each event (a load, an update, an insert)
        then costs them once for the group. When the group's transaction fails, each event is
        committed on its own, with its own items."""
        if self._session is not None:
            batch(self._session, [item])
        else:
            self._batched.append((batch, item))

    @property
    def has_writes(self) -> bool:
        """Whether an ``async`` handler left writes for its transaction."""
        return bool(self._writes) or bool(self._batched)

    def apply_writes(
        self, session: Session, batches: dict[BatchWrite, list[Any]] | None = None
    ) -> None:
        """Run the writes an ``async`` handler left, in ``session``'s transaction. They are
        kept: a group transaction that rolls back runs them again in the event's own. Its
        batched writes run now with its own items, or, given ``batches`` (a group's), its items
        join those of their batches there, for the caller to run once for the group."""
        for write in self._writes:
            write(session)
        own: dict[BatchWrite, list[Any]] = {} if batches is None else batches
        for batch, item in self._batched:
            own.setdefault(batch, []).append(item)
        if batches is None:
            for batch, items in own.items():
                batch(session, items)

    def linked(self, event: Event) -> Event:
        """``event`` as :meth:`emit` publishes it: with the handled event's correlation id (or
        its id, when it had none) and the handled event's id as causation id, unless ``event``
        sets them itself."""
        return event.model_copy(
            update={
                "correlationid": event.correlationid or self.event.correlationid or self.event.id,
                "causationid": event.causationid or self.event.id,
            }
        )

    def emit(
        self,
        event: Event,
        *,
        aggregate_type: str,
        aggregate_id: str,
        topic: str | None = None,
    ) -> Event:
        """Publish ``event`` through the transactional outbox, in this unit's transaction.

        Its topic is ``topic`` when given, else the route of its event type, else of
        ``aggregate_type``: the routes of the settings the runtime was given
        (``outbox.routes``, ``PIPELINE_OUTBOX__ROUTES``).

        The handled event's correlation id is carried over (or its id, when it had none), and
        it becomes the causation id, unless ``event`` sets them itself.
        """
        from pipeline.outbox.table import PendingEvent, add_to_outbox

        linked = self.linked(event)
        outbox = self.outbox
        if self._session is None:  # an async handler's: with those of its group, in one insert
            # The units of a group share the runtime's outbox, so its add_all (bound methods
            # of one object are equal) is one batch for the whole group.
            self.write_batched(
                _add_emitted if outbox is None else outbox.add_all,
                PendingEvent(linked, aggregate_type, aggregate_id, topic),
            )
        elif outbox is None:
            add_to_outbox(
                self._session,
                linked,
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                topic=topic,
            )
        else:
            outbox.add(
                self._session,
                linked,
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                topic=topic,
            )
        self._emitted.append(linked)
        return linked


def _add_emitted(session: Session, pending: list[Any]) -> None:
    """The events that the ``async`` handlers of a group emitted, into the outbox in one
    statement (after the handlers' other writes, in the order emitted)."""
    from pipeline.outbox.table import Outbox

    Outbox().add_all(session, pending)


Handler = Callable[[Event, UnitOfWork], Awaitable[None] | None]


@dataclass(frozen=True)
class PeriodicTask:
    """A task of the processor, run every ``every_s`` seconds (see :meth:`Processor.every`)."""

    every_s: float
    run: Callable[[Engine], None]

    @property
    def name(self) -> str:
        """The function's qualified name without ``<locals>`` (a task defined in a function that
        builds the processor reads ``orchestrator_processor.fire_deadlines`` in the log)."""
        return getattr(self.run, "__qualname__", repr(self.run)).replace("<locals>.", "")


@dataclass(frozen=True)
class Route:
    handler: Handler
    model: type[BaseModel] | None = None
    #: Whether a synchronous handler may share a group's transaction (see ``handler``).
    grouped: bool = True

    @property
    def name(self) -> str:
        return getattr(self.handler, "__qualname__", repr(self.handler))

    @cached_property
    def is_async(self) -> bool:
        """``async def`` handlers run on the event loop and commit in groups."""
        return inspect.iscoroutinefunction(self.handler)


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
        self.periodic_tasks: list[PeriodicTask] = []
        #: Prometheus registries of the processor's own, served beside the runtime's metrics.
        self.metric_registries: list[CollectorRegistry] = []
        #: Topics whose keys are never parked (:meth:`never_park_keys`).
        self.keys_never_parked: set[str] = set()
        #: How far the processor's consumer group has handled each of its topics, as a time
        #: (:mod:`pipeline.processing.read_through`): set by what runs the processor
        #: (``pipeline process``, the test driver) before it starts; ``None`` elsewhere.
        self.progress: TopicProgress | None = None

    def never_park_keys(self, topic: str) -> None:
        """After one of ``topic``'s events is dead-lettered, handle its key's later events as
        usual, whatever ``processing.on_dead_letter`` says: for a topic whose later events must
        not wait for a redrive. A saga participant's commands are such a topic: the command
        that follows a failed action is its compensation, which must be answered (the
        participant's own log keeps the steps' order)."""
        self.keys_never_parked.add(topic)

    @property
    def topics(self) -> list[str]:
        return sorted({topic for topic, _ in self._routes})

    def handler(
        self,
        topic: str,
        *,
        event_type: str | None = None,
        model: type[BaseModel] | None = None,
        grouped: bool = True,
    ) -> Callable[[Handler], Handler]:
        """Register a handler for ``topic`` (only events of ``event_type`` when given).

        ``model``: a pydantic model ``event.data`` must fit; an event whose data does not is
        dead-lettered as ``schema_invalid`` without calling the handler. ``grouped=False``:
        a synchronous handler whose duration may jump (a remote call that can hang) never
        shares a group commit's transaction, where it would hold up the events after it
        (``processing.sync_group_wait_ms`` sizes groups by the handlers' recent durations).
        """

        def register(function: Handler) -> Handler:
            route_key = (topic, event_type)
            if route_key in self._routes:
                what = f"event type {event_type!r}" if event_type else "every event type"
                raise PipelineError(f"{self.name}: {topic} already has a handler for {what}")
            self._routes[route_key] = Route(function, model, grouped)
            return function

        return register

    def on_start(self, hook: Callable[[Engine], None]) -> Callable[[Engine], None]:
        """Register ``hook(database)`` to run once before consuming (e.g. create the service's
        own tables); the runtime and the test driver call it after migrating the database."""
        self.startup_hooks.append(hook)
        return hook

    def every(
        self, seconds: float
    ) -> Callable[[Callable[[Engine], None]], Callable[[Engine], None]]:
        """Register ``task(database)`` to run every ``seconds`` while the processor runs (in a
        worker thread, one run at a time; an exception is logged and the task runs again next
        time). The saga orchestrator fires its deadlines this way."""
        if seconds <= 0:
            raise ValueError(f"a periodic task needs seconds > 0, got {seconds}")

        def register(task: Callable[[Engine], None]) -> Callable[[Engine], None]:
            self.periodic_tasks.append(PeriodicTask(seconds, task))
            return task

        return register

    def start(self, database: Engine) -> None:
        """Run the start hooks in order; one that fails is a :class:`PipelineError` naming it
        (the error it raised is its cause), which ``pipeline process`` prints as one line."""
        for hook in self.startup_hooks:
            try:
                hook(database)
            except PipelineError:
                raise
            except Exception as error:
                name = getattr(hook, "__qualname__", repr(hook))
                message = " ".join(str(error).split())[:500]
                raise PipelineError(
                    f"{self.name}: start hook {name} failed: {type(error).__name__}: {message}"
                ) from error

    @property
    def has_async_handlers(self) -> bool:
        return any(route.is_async for route in self._routes.values())

    def route(self, topic: str, event_type: str) -> Route | None:
        """The handler for this event: its type's own, else the topic's catch-all."""
        return self._routes.get((topic, event_type)) or self._routes.get((topic, None))

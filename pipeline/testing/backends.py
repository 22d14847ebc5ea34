"""One test body, two backends: the broker-free harness or the real stack.

A test names its processors as ``pipeline process`` does (``module:attribute``) and talks to a
:class:`PipelineBackend`::

    def test_orders(pipeline_backend):          # --pipeline-backend driver|kafka
        backend = pipeline_backend(["shop.orders:processor", "shop.billing:processor"])
        backend.replay(read_recording(Path("tests/data/orders.ndjson")))
        backend.wait_until(lambda: all_invoiced(backend.database), timeout_s=60, what="invoices")
        with backend.database.connect() as connection:
            ...                                  # the same queries on either backend

- ``driver`` (:class:`DriverBackend`): a :class:`~pipeline.processing.harness.PipelineHarness`
  in this process on a temporary SQLite database, with a virtual clock; ``timeout_s`` is virtual
  time, moved a second at a time while the condition does not hold.
- ``kafka`` (:class:`~pipeline.testing.kafka_backend.KafkaBackend`): each processor as a
  ``pipeline process`` program and ``pipeline outbox relay``, on the real Kafka and a fresh
  PostgreSQL database; ``timeout_s`` is real time. Each program runs under a consumer group of
  the test's own (``<name>.test-<token>``), not the processor's name, so a real group of that
  name on the stack is never moved: ``backend.consumer_group(name)`` says which, on either
  backend (the owner of the inbox rows and parked keys a test may query).

Both read dead letters the same way (``backend.dead_letters(topic)``: the pending
:class:`~pipeline.dead_letters.letter.DeadLetter` objects of ``<topic>.dlq``), and a
``wait_until`` that fails says what the condition last returned.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Literal, Protocol, TypeVar

from sqlalchemy.engine import Engine

from pipeline.cli.process import load_processor
from pipeline.dead_letters.letter import DeadLetter
from pipeline.envelope import Event, KafkaMessage
from pipeline.plurals import counted
from pipeline.processing.harness import Clocked, PipelineHarness
from pipeline.replay.recording import RecordedMessage
from pipeline.sagas.orchestrator import SagaOrchestrator
from pipeline.settings import OutboxSettings, ProcessingSettings
from pipeline.topics.catalogue import DEFAULT_PARTITIONS, default_catalogue

__all__ = [
    "BackendKind",
    "DriverBackend",
    "PipelineBackend",
    "catalogue_partitions",
    "driver_processing",
    "last_returned",
    "pending_letters",
    "processor_specs",
    "text_list",
]

BackendKind = Literal["driver", "kafka"]
BACKENDS: tuple[BackendKind, ...] = ("driver", "kafka")
T = TypeVar("T")
#: How much of the condition's last value a failed ``wait_until`` shows.
_LAST_VALUE_CHARS = 300
#: How many pending dead letters a failed ``wait_until`` on the driver describes.
_LETTERS_SHOWN = 3


class PipelineBackend(Protocol):
    """What a test does with its processors, whichever backend runs them."""

    kind: BackendKind

    @property
    def database(self) -> Engine:
        """The services' database (the processors' effects, inbox, outbox and sagas)."""

    def send(self, topic: str, messages: Iterable[Event | KafkaMessage]) -> int:
        """Produce ``messages`` to ``topic`` (partitioned by key); returns how many. A topic
        no processor reads is a :class:`ValueError` naming those they read."""

    def replay(self, messages: Iterable[RecordedMessage], *, topic: str | None = None) -> int:
        """Replay recorded messages into their topics (or ``topic``); returns how many."""

    def settle(self, *, timeout_s: float = 120.0) -> None:
        """Wait until the processors are idle: every input handled, the outbox relayed."""

    def wait_until(self, condition: Callable[[], T], *, timeout_s: float, what: str) -> T:
        """Run until ``condition()`` is true (returned); :class:`AssertionError` naming
        ``what`` and what the condition last returned once ``timeout_s`` passed."""

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        """The dead letters of ``topic`` not redriven yet (of this test's processors), in
        ``<topic>.dlq``'s partition and offset order; a topic no processor reads is a
        :class:`ValueError`. On ``kafka`` they arrive when the processors send them: wait for
        them (``wait_until(lambda: backend.dead_letters(topic), ...)``)."""

    def consumer_group(self, processor: str) -> str:
        """The consumer group the processor named ``processor`` runs under, which owns its
        inbox rows and parked keys: its name on the driver, one of the test's own on
        ``kafka``; a :class:`ValueError` for a name none of the processors has."""

    def close(self) -> None: ...


def last_returned(value: object) -> str:
    """What a failed ``wait_until`` says the condition last returned: its ``repr``, cut to a
    few hundred characters."""
    text = repr(value)
    if len(text) > _LAST_VALUE_CHARS:
        text = f"{text[: _LAST_VALUE_CHARS - 20]}... ({len(text):,} characters)"
    return f"the condition last returned {text}"


def pending_letters(letters: Sequence[DeadLetter]) -> str:
    """A failed ``wait_until``'s line about the dead letters pending: how many, and the first
    few (topic, key, reason, error), since a refused input is the usual reason for a wait that
    never ends."""
    if not letters:
        return "no dead letter pending"
    shown = "; ".join(
        f"{letter.original_topic} key {letter.key_text or '(none)'}: {letter.reason} "
        f"({letter.error_type}: {letter.error_message[:120]})"
        for letter in letters[:_LETTERS_SHOWN]
    )
    more = len(letters) - _LETTERS_SHOWN
    return f"{counted(len(letters), 'dead letter')} pending: {shown}" + (
        f"; and {more:,} more" if more > 0 else ""
    )


def catalogue_partitions() -> dict[str, int]:
    """The partitions of the project's catalogue topics, by name (the harness's default)."""
    return {spec.name: spec.partitions for spec in default_catalogue()}


class _PartitionsAsTheStackMakesThem(Mapping[str, int]):
    """Every topic's partitions as the ``kafka`` backend creates them: a catalogue topic's
    own, any other's :data:`~pipeline.topics.catalogue.DEFAULT_PARTITIONS`, so that one test
    body puts each key on the same partition on either backend."""

    def __init__(self, declared: Mapping[str, int]) -> None:
        self._declared = dict(declared)

    def __getitem__(self, topic: str) -> int:
        return self._declared.get(topic, DEFAULT_PARTITIONS)

    def __iter__(self) -> Iterator[str]:
        return iter(self._declared)

    def __len__(self) -> int:
        return len(self._declared)


def text_list(given: object, what: str, example: str) -> list[str]:
    """``given``, a collection of text, as a list; a :class:`TypeError` naming ``what`` for one
    text (which would be taken letter by letter) or anything else."""
    if isinstance(given, str | bytes):
        raise TypeError(
            f"{what} takes a list, like {example}; got {given!r:.60} alone (one text would be "
            "taken letter by letter): put it in a list"
        )
    if not isinstance(given, Iterable):
        raise TypeError(f"{what} takes a list, like {example}; got {type(given).__name__}")
    items = list(given)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(
                f"{what} takes a list of text, like {example}; it holds {item!r:.60} "
                f"({type(item).__name__})"
            )
    return items


def processor_specs(processors: object) -> list[str]:
    """The ``module:attribute`` specs of ``pipeline_backend(processors)`` as a list; a
    :class:`TypeError` for one spec given alone or anything but text in a list."""
    return text_list(processors, "pipeline_backend: processors", '["shop.points:processor"]')


def _module_clocked(modules: Iterable[ModuleType]) -> list[Clocked]:
    """The saga orchestrators the processors' modules hold (a service's saga starter too)."""
    found: dict[int, Clocked] = {}
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, SagaOrchestrator):
                found[id(value)] = value
    return list(found.values())


def driver_processing(processing: ProcessingSettings) -> ProcessingSettings:
    """``processing`` (the environment's, as ``pipeline process`` reads them) as the driver runs
    them: one event at a time (deterministic, and SQLite has one writer) unless
    ``max_in_flight`` was set."""
    if "max_in_flight" in processing.model_fields_set:
        return processing
    return processing.model_copy(update={"max_in_flight": 1})


class DriverBackend:
    """The processors named by ``processors`` in a :class:`PipelineHarness`.

    Topics have the partitions the ``kafka`` backend gives them (a catalogue topic its own,
    any other :data:`~pipeline.topics.catalogue.DEFAULT_PARTITIONS`) unless ``partitions``
    says otherwise; ``settings`` are the environment's processing settings by default
    (:func:`driver_processing`: one event at a time unless ``max_in_flight`` is set; the
    ``pipeline_backend`` fixture reads them with ``env=`` applied). ``outbox``: the routes of
    the units' emits (the defaults unless given; the fixture gives those of the environment,
    ``env=`` included).
    Every :class:`~pipeline.sagas.orchestrator.SagaOrchestrator` held by a processor's module
    reads the harness's virtual clock while the backend is open.
    """

    kind: BackendKind = "driver"

    def __init__(
        self,
        processors: Sequence[str],
        *,
        settings: ProcessingSettings | None = None,
        partitions: int | Mapping[str, int] | None = None,
        outbox: OutboxSettings | None = None,
    ) -> None:
        processors = processor_specs(processors)
        loaded = [load_processor(spec) for spec in processors]
        modules = [sys.modules[spec.partition(":")[0]] for spec in processors]
        self.harness = PipelineHarness(
            loaded,
            settings=settings or driver_processing(ProcessingSettings()),
            partitions=(
                _PartitionsAsTheStackMakesThem(catalogue_partitions())
                if partitions is None
                else partitions
            ),
            clocked=_module_clocked(modules),
            outbox=outbox,
        )

    @property
    def database(self) -> Engine:
        return self.harness.database

    def send(self, topic: str, messages: Iterable[Event | KafkaMessage]) -> int:
        return self.harness.send_all(topic, messages)

    def replay(self, messages: Iterable[RecordedMessage], *, topic: str | None = None) -> int:
        return self.harness.send_recording(messages, topic=topic)

    def settle(self, *, timeout_s: float = 120.0) -> None:
        self.harness.run_until_idle()

    def wait_until(
        self, condition: Callable[[], T], *, timeout_s: float, what: str, step_s: float = 1.0
    ) -> T:
        """Run until idle, then move the virtual clock ``step_s`` at a time (deadlines and
        backoffs fall due) until ``condition()`` holds or ``timeout_s`` virtual seconds passed.
        The failure says what the condition last returned and the dead letters pending."""
        started = time.monotonic()
        waited = 0.0
        self.harness.run_until_idle()
        while True:
            found = condition()
            if found:
                return found
            if waited >= timeout_s:
                real = time.monotonic() - started
                raise AssertionError(
                    f"{what}: not after {timeout_s:g} virtual seconds ({real:.1f} s real) "
                    f"on the driver; {last_returned(found)}; "
                    f"{pending_letters(self._all_dead_letters())}"
                )
            self.harness.advance(step_s)
            waited += step_s

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        return self.harness.dead_letters(topic)

    def consumer_group(self, processor: str) -> str:
        names = [driver.processor.name for driver in self.harness.drivers]
        if processor not in names:
            known = ", ".join(names) or "none"
            raise ValueError(f"no processor {processor!r} here (the processors: {known})")
        return processor  # the driver's group is the processor's name

    def _all_dead_letters(self) -> list[DeadLetter]:
        """The pending dead letters of every topic read, in topic order."""
        read = sorted({name for driver in self.harness.drivers for name in driver.processor.topics})
        return [letter for topic in read for letter in self.harness.dead_letters(topic)]

    def close(self) -> None:
        self.harness.close()

"""The project's topics, declared once, and the loader of user-defined catalogues (TOML).

Every topic a processor consumes has a dead-letter topic ``<topic>.dlq``. Partitions: 6 where
per-key ordering meets real parallelism (requests and saga commands), 3 elsewhere. Retention:
7 days for requests and events, 3 days for logs (Elasticsearch keeps them for search), 14 days for
dead letters (time to inspect and redrive).

A catalogue file is a list of ``[[topic]]`` tables with the fields of :class:`TopicSpec`::

    [[topic]]
    name = "requests.orders"
    partitions = 6
    replication_factor = 1
    retention_ms = 604_800_000
    cleanup_policy = "delete"
    description = "PlaceOrder and CancelOrder, keyed by order id"
    configs = { "min.insync.replicas" = "1" }
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.topics.spec import DAY_MS, Catalogue, CatalogueError, TopicSpec, dlq_name

REQUESTS_ORDERS = "requests.orders"
REQUESTS_CUSTOMERS = "requests.customers"
LOGS = "logs"
#: The namespace of the saga topics (``saga.replies``, ``saga.<participant>.commands``, ...);
#: a second saga system on the cluster takes its own (pipeline.sagas.SagaTopics).
SAGA_NAMESPACE = "saga"
SAGA_REPLIES = f"{SAGA_NAMESPACE}.replies"
SAGA_EVENTS = f"{SAGA_NAMESPACE}.events"
ORDERS_EVENTS = "orders.events"
PAYMENTS_EVENTS = "payments.events"
SAGA_PARTICIPANTS: tuple[str, ...] = ("orders", "payments", "inventory", "shipping")

EVENT_RETENTION_MS = 7 * DAY_MS
LOG_RETENTION_MS = 3 * DAY_MS
DLQ_RETENTION_MS = 14 * DAY_MS
PARALLEL_PARTITIONS = 6
"""Requests and saga commands: ordered per key, handled in parallel across keys."""
DEFAULT_PARTITIONS = 3


def requests_topic(request_type: str) -> str:
    """The topic of one kind of request: ``requests_topic("orders")`` -> ``requests.orders``."""
    return f"requests.{request_type}"


def saga_commands_topic(participant: str, namespace: str = SAGA_NAMESPACE) -> str:
    """The command topic of a saga participant: ``saga.payments.commands``."""
    return f"{namespace}.{participant}.commands"


SAGA_PAYMENTS_COMMANDS = saga_commands_topic("payments")
SAGA_INVENTORY_COMMANDS = saga_commands_topic("inventory")
SAGA_SHIPPING_COMMANDS = saga_commands_topic("shipping")
SAGA_ORDERS_COMMANDS = saga_commands_topic("orders")


def _durability_configs(replication_factor: int) -> dict[str, str]:
    # With acks=all, two in-sync copies must hold a write once there are enough replicas for one
    # to be down; with fewer replicas the broker's default (1) is the only workable value.
    return {"min.insync.replicas": "2"} if replication_factor >= 3 else {}


def default_catalogue(replication_factor: int = 1) -> Catalogue:
    """The project's topics; ``replication_factor`` applies to all (1 for a single broker)."""
    extra = _durability_configs(replication_factor)

    def topic(
        name: str,
        partitions: int,
        retention_ms: int,
        description: str,
        configs: dict[str, str] | None = None,
    ) -> TopicSpec:
        return TopicSpec(
            name=name,
            partitions=partitions,
            replication_factor=replication_factor,
            retention_ms=retention_ms,
            cleanup_policy="delete",
            configs={**extra, **(configs or {})},
            description=description,
        )

    consumed = [
        topic(
            REQUESTS_ORDERS,
            PARALLEL_PARTITIONS,
            EVENT_RETENTION_MS,
            "PlaceOrder and CancelOrder requests, keyed by order id so one order's requests "
            "stay in order",
        ),
        topic(
            REQUESTS_CUSTOMERS,
            PARALLEL_PARTITIONS,
            EVENT_RETENTION_MS,
            "Customer requests, keyed by customer id",
        ),
        topic(
            LOGS,
            DEFAULT_PARTITIONS,
            LOG_RETENTION_MS,
            "Structured (ECS) log records of every process, keyed by service name",
        ),
        *(
            topic(
                saga_commands_topic(participant),
                PARALLEL_PARTITIONS,
                EVENT_RETENTION_MS,
                f"Saga commands for the {participant} participant, keyed by saga id",
            )
            for participant in SAGA_PARTICIPANTS
        ),
        topic(
            SAGA_REPLIES,
            DEFAULT_PARTITIONS,
            EVENT_RETENTION_MS,
            "Participants' replies to saga commands, keyed by saga id, read by the orchestrator",
            # A reply's timestamp is when it reached the topic (the broker's clock): a step's
            # timeout loses to a reply stamped by its deadline.
            {"message.timestamp.type": "LogAppendTime"},
        ),
    ]
    produced_only = [
        topic(
            SAGA_EVENTS,
            DEFAULT_PARTITIONS,
            EVENT_RETENTION_MS,
            "Every saga transition (started, step done, compensating, finished), keyed by saga id",
        ),
        topic(
            ORDERS_EVENTS,
            DEFAULT_PARTITIONS,
            EVENT_RETENTION_MS,
            "Order domain events from the outbox, keyed by order id",
        ),
        topic(
            PAYMENTS_EVENTS,
            DEFAULT_PARTITIONS,
            EVENT_RETENTION_MS,
            "Payment domain events from the outbox, keyed by order id",
        ),
    ]
    dead_letters = [
        topic(
            dlq_name(spec.name),
            DEFAULT_PARTITIONS,
            DLQ_RETENTION_MS,
            f"Dead letters of {spec.name}, with the error in headers",
        )
        for spec in consumed
    ]
    return Catalogue([*consumed, *produced_only, *dead_letters])


def _where(loc: tuple[int | str, ...]) -> str:
    return f"field {'.'.join(str(part) for part in loc)}: " if loc else ""


def _topic_from_table(path: Path, index: int, table: Any) -> TopicSpec:
    if not isinstance(table, dict):
        raise CatalogueError(f"{path}: topic #{index + 1}: expected a [[topic]] table")
    name = table.get("name")
    label = f"topic {name}" if isinstance(name, str) and name else f"topic #{index + 1}"
    try:
        return TopicSpec.model_validate(table)
    except ValidationError as error:
        first = error.errors()[0]
        reason = first["msg"].removeprefix("Value error, ")
        raise CatalogueError(f"{path}: {label}: {_where(first['loc'])}{reason}") from None


def load_catalogue_file(path: Path | str) -> Catalogue:
    """Read a catalogue from a TOML file of ``[[topic]]`` tables.

    Raises :class:`CatalogueError` with one line naming the file, the topic, the field and the
    reason for the first problem found.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise CatalogueError(f"{path}: cannot read the catalogue file: {reason}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CatalogueError(f"{path}: not valid TOML: {error}") from None
    unknown = sorted(set(document) - {"topic"})
    if unknown:
        raise CatalogueError(
            f"{path}: unknown top-level key {unknown[0]!r} (expected only [[topic]] tables)"
        )
    tables = document.get("topic")
    if not isinstance(tables, list) or not tables:
        raise CatalogueError(f"{path}: no topics defined (expected [[topic]] tables)")
    specs = [_topic_from_table(path, index, table) for index, table in enumerate(tables)]
    try:
        return Catalogue(specs)
    except CatalogueError as error:
        raise CatalogueError(f"{path}: {error}") from None

"""What a topic should look like (:class:`TopicSpec`); a validated set of them (:class:`Catalogue`).

Topic names follow the design's ``<domain>.<kind>`` rule: dot-separated segments of lowercase
letters, digits, ``_`` and ``-``, at least two of them, at most 249 characters (Kafka's limit).
Dead letters of a topic go to ``<topic>.dlq``; ``dlq`` is only ever the last segment and a
dead-letter topic has no dead-letter topic of its own.

The one exception to "at least two segments" is a short, explicit allowlist of well-known roots
(:data:`SINGLE_SEGMENT_NAMES`): the design names the log topic plainly ``logs`` (and so its dead
letters ``logs.dlq``), and every later part refers to it by that name. An allowlist keeps the rule
strict for everything else, so a forgotten ``.kind`` is still caught.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from pipeline.errors import PipelineError
from pipeline.topic_names import MAX_NAME_LENGTH

CleanupPolicy = Literal["delete", "compact", "compact,delete"]

DLQ_SUFFIX = ".dlq"

SINGLE_SEGMENT_NAMES: frozenset[str] = frozenset({"logs"})
"""Well-known topics allowed a one-segment name (the design's ``logs`` topic)."""

MANAGED_KEYS: frozenset[str] = frozenset({"retention.ms", "cleanup.policy"})
"""Topic configs set through their own :class:`TopicSpec` fields, never through ``configs``."""

DAY_MS = 24 * 60 * 60 * 1000

#: The most partitions a topic may have: confluent-kafka's ``NewTopic`` and ``NewPartitions``
#: refuse more (a ``ValueError`` from ``create_topics`` or ``create_partitions``: "out of
#: expected range 1..100000", librdkafka's ``RD_KAFKAP_PARTITIONS_MAX``), whatever the broker
#: would take.
MAX_PARTITIONS = 100_000

#: The largest replication factor: Kafka's, an int16. (librdkafka's ``NewTopic`` refuses more
#: than 10,000, ``RD_KAFKAP_BROKERS_MAX``; :func:`pipeline.topics.admin.apply_plan` refuses any
#: factor above the brokers available before it sends anything.)
MAX_REPLICATION_FACTOR = 2**15 - 1

_SEGMENT = re.compile(r"[a-z0-9_-]+")
_CONFIG_KEY = re.compile(r"[a-z][a-z0-9]*(\.[a-z0-9]+)*")


class CatalogueError(PipelineError):
    """A topic definition or catalogue that breaks the rules; names the topic and the problem."""


def dlq_name(topic: str) -> str:
    """The dead-letter topic of ``topic``: ``requests.orders`` -> ``requests.orders.dlq``."""
    return topic + DLQ_SUFFIX


def is_dlq(name: str) -> bool:
    """Whether ``name`` is a dead-letter topic (ends in ``.dlq``)."""
    return name.endswith(DLQ_SUFFIX)


def dlq_base(name: str) -> str:
    """The topic whose dead letters ``name`` holds: ``logs.dlq`` -> ``logs``."""
    if not is_dlq(name):
        raise ValueError(f"{name!r} is not a dead-letter topic (no {DLQ_SUFFIX!r} suffix)")
    return name[: -len(DLQ_SUFFIX)]


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid topic name, or ``None`` when it is."""
    if not name:
        return "the name is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"the name is {len(name)} characters long, Kafka allows at most {MAX_NAME_LENGTH}"
    segments = name.split(".")
    for segment in segments:
        if not segment:
            return "the name has an empty segment (leading, trailing or double dot)"
        if not _SEGMENT.fullmatch(segment):
            return (
                f"segment {segment!r} may only hold lowercase letters, digits, '_' and '-' "
                "(names are <domain>.<kind>)"
            )
    if "dlq" in segments[:-1]:
        return "'dlq' may only be the last segment, and a dead-letter topic has none of its own"
    if segments == ["dlq"]:
        return "'dlq' alone is not a topic; dead letters go to <topic>.dlq"
    if len(segments) < 2 and name not in SINGLE_SEGMENT_NAMES:
        allowed = ", ".join(sorted(SINGLE_SEGMENT_NAMES))
        return f"names are <domain>.<kind> with at least two segments (only {allowed} may have one)"
    return None


def _config_value(value: Any) -> Any:
    # TOML files give numbers and booleans; Kafka wants strings ("true", not "True").
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


class TopicSpec(BaseModel):
    """One topic as it should exist: its partitions, replication, retention and other configs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    partitions: int = Field(ge=1)  # and at most MAX_PARTITIONS: _within_the_clients_limit
    replication_factor: int = Field(default=1, ge=1, le=MAX_REPLICATION_FACTOR)
    retention_ms: int = Field(default=7 * DAY_MS, description="-1 keeps records forever")
    cleanup_policy: CleanupPolicy = "delete"
    configs: dict[str, str] = Field(default_factory=dict)
    description: str = ""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        problem = name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("partitions", "replication_factor", "retention_ms", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        # Python's bool is an int, and pydantic took TOML's ``partitions = true`` for one
        # partition and ``retention_ms = true`` for a retention of 1 ms. (A float with nothing
        # after the point, ``3.0``, is still the whole number it holds; ``1.5`` is refused.)
        if isinstance(value, bool):
            raise ValueError(f"expected a whole number, got the boolean {str(value).lower()}")
        return value

    @field_validator("partitions")
    @classmethod
    def _within_the_clients_limit(cls, value: int) -> int:
        if value > MAX_PARTITIONS:
            raise ValueError(
                f"at most {MAX_PARTITIONS:,} partitions, the most the Kafka client creates a "
                f"topic with or grows one to (got {value:,})"
            )
        return value

    @field_validator("retention_ms")
    @classmethod
    def _valid_retention(cls, value: int) -> int:
        if value != -1 and value <= 0:
            raise ValueError("retention_ms must be -1 (forever) or a positive number of ms")
        return value

    @field_validator("configs", mode="before")
    @classmethod
    def _stringify_configs(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: _config_value(item) for key, item in value.items()}
        return value

    @field_validator("configs")
    @classmethod
    def _valid_configs(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key in MANAGED_KEYS:
                field = key.replace(".", "_")
                raise ValueError(f"{key!r} is set with the {field} field, not in configs")
            if not _CONFIG_KEY.fullmatch(key):
                raise ValueError(f"{key!r} is not a Kafka topic config name")
        return value

    @field_validator("cleanup_policy")
    @classmethod
    def _dlq_deletes(cls, value: CleanupPolicy, info: ValidationInfo) -> CleanupPolicy:
        name = info.data.get("name")
        if isinstance(name, str) and is_dlq(name) and value != "delete":
            raise ValueError(
                "a dead-letter topic keeps every record it is given: cleanup_policy must be delete"
            )
        return value

    @property
    def is_dlq(self) -> bool:
        return is_dlq(self.name)

    def desired_configs(self) -> dict[str, str]:
        """Every topic config this spec manages, as Kafka spells them."""
        return {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
            **self.configs,
        }


def _collision_key(name: str) -> str:
    return name.replace(".", "_")


class Catalogue:
    """A validated, ordered collection of :class:`TopicSpec`.

    Rules, checked on construction (the first broken one raises :class:`CatalogueError`):

    1. every name is unique;
    2. no two names differ only by ``.`` versus ``_`` (Kafka refuses them: their metrics collide);
    3. every dead-letter topic's base topic is in the catalogue.
    """

    __slots__ = ("_by_name",)

    def __init__(self, topics: Iterable[TopicSpec]) -> None:
        by_name: dict[str, TopicSpec] = {}
        collisions: dict[str, str] = {}
        for spec in topics:
            if spec.name in by_name:
                raise CatalogueError(f"topic {spec.name}: defined more than once")
            other = collisions.get(_collision_key(spec.name))
            if other is not None:
                raise CatalogueError(
                    f"topic {spec.name}: collides with {other} ('.' and '_' are the same in "
                    "Kafka's metric names)"
                )
            by_name[spec.name] = spec
            collisions[_collision_key(spec.name)] = spec.name
        for spec in by_name.values():
            if spec.is_dlq and dlq_base(spec.name) not in by_name:
                raise CatalogueError(
                    f"topic {spec.name}: dead-letter topic of {dlq_base(spec.name)}, "
                    "which is not in the catalogue"
                )
        self._by_name = by_name

    @property
    def topics(self) -> tuple[TopicSpec, ...]:
        return tuple(self._by_name.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def get(self, name: str) -> TopicSpec | None:
        return self._by_name.get(name)

    def dlq_of(self, name: str) -> TopicSpec | None:
        """The dead-letter topic declared for ``name``, if any."""
        return self._by_name.get(dlq_name(name))

    def __getitem__(self, name: str) -> TopicSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"topic {name!r} is not in the catalogue") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[TopicSpec]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Catalogue):
            return NotImplemented
        return self.topics == other.topics

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Catalogue({list(self._by_name)!r})"

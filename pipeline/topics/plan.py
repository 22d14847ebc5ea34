"""Planning: what must change on the cluster so it matches the catalogue. Pure, no I/O.

:func:`build_plan` compares each :class:`TopicSpec` with the topic as it exists
(:class:`ActualTopic`) and returns a :class:`Plan`:

- changes that can be applied: create a missing topic, add partitions, set a managed config;
- warnings for differences that cannot be applied automatically (fewer partitions than exist,
  a different replication factor): they are reported, never applied and never hidden.

Only the configs a spec manages (:meth:`TopicSpec.desired_configs`) are set; another config set
on a topic itself is left alone, with a warning. Topics on the cluster that the catalogue does
not mention are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.plurals import counted
from pipeline.topics.spec import Catalogue, TopicSpec


@dataclass(frozen=True)
class ActualTopic:
    """A topic as it exists on the cluster."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)
    #: The configs set on the topic itself, not inherited from the broker's or Kafka's defaults.
    overridden: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CreateTopic:
    """Create a topic that does not exist, with all its configs."""

    spec: TopicSpec

    @property
    def topic(self) -> str:
        return self.spec.name

    def describe(self) -> str:
        spec = self.spec
        # Every config it is created with: retention and cleanup policy first, then the others.
        configs = {
            "retention.ms": str(spec.retention_ms),
            "cleanup.policy": spec.cleanup_policy,
            **spec.configs,
        }
        return (
            f"create: {counted(spec.partitions, 'partition')}, "
            f"replication {spec.replication_factor}, "
            + ", ".join(f"{key}={value}" for key, value in configs.items())
        )


@dataclass(frozen=True)
class IncreasePartitions:
    """Add partitions to an existing topic (keys may move to other partitions from then on)."""

    topic: str
    old: int
    new: int

    def describe(self) -> str:
        return f"partitions: {self.old} -> {self.new} (keys map to other partitions from now on)"


@dataclass(frozen=True)
class SetConfig:
    """Set one topic config; ``old`` is ``None`` when the cluster did not report the key."""

    topic: str
    key: str
    old: str | None
    new: str

    def describe(self) -> str:
        old = "(unset)" if self.old is None else self.old
        return f"{self.key}: {old} -> {self.new}"


Change = CreateTopic | IncreasePartitions | SetConfig


@dataclass(frozen=True)
class PlanWarning:
    """A difference the plan cannot apply; a person has to decide."""

    topic: str
    problem: str

    def describe(self) -> str:
        return self.problem


@dataclass(frozen=True)
class Plan:
    """The changes to apply, in order (creations, then partitions, then configs), and warnings."""

    changes: tuple[Change, ...] = ()
    warnings: tuple[PlanWarning, ...] = ()

    @property
    def creations(self) -> tuple[CreateTopic, ...]:
        return tuple(change for change in self.changes if isinstance(change, CreateTopic))

    @property
    def partition_increases(self) -> tuple[IncreasePartitions, ...]:
        return tuple(change for change in self.changes if isinstance(change, IncreasePartitions))

    @property
    def config_changes(self) -> tuple[SetConfig, ...]:
        return tuple(change for change in self.changes if isinstance(change, SetConfig))

    @property
    def has_changes(self) -> bool:
        """Whether there is anything to apply."""
        return bool(self.changes)

    @property
    def is_empty(self) -> bool:
        """Nothing to apply and nothing to warn about: the cluster matches the catalogue."""
        return not self.changes and not self.warnings


def _normalized(key: str, value: str | None) -> str | None:
    if value is None:
        return None
    if key == "cleanup.policy":
        # A list config: "delete,compact" and "compact, delete" are the same policy.
        return ",".join(sorted(part.strip() for part in value.split(",") if part.strip()))
    if value.lower() in ("true", "false"):
        return value.lower()
    return value.strip()


def _same(key: str, actual: str | None, desired: str) -> bool:
    return _normalized(key, actual) == _normalized(key, desired)


def _applied(change: Change, actual: ActualTopic | None) -> bool:
    if actual is None:
        return False
    if isinstance(change, CreateTopic):
        return actual.partitions >= change.spec.partitions
    if isinstance(change, IncreasePartitions):
        return actual.partitions >= change.new
    return _same(change.key, actual.configs.get(change.key), change.new)


def unapplied(plan: Plan, actual: Mapping[str, ActualTopic]) -> tuple[Change, ...]:
    """The plan's changes that ``actual`` (by topic name) does not show yet.

    Kafka acknowledges a change before every broker's metadata shows it; this tells when it does.
    """
    return tuple(
        change for change in plan.changes if not _applied(change, actual.get(change.topic))
    )


def _topic_changes(
    spec: TopicSpec, actual: ActualTopic
) -> tuple[list[IncreasePartitions], list[SetConfig], list[PlanWarning]]:
    increases: list[IncreasePartitions] = []
    warnings: list[PlanWarning] = []
    if spec.partitions > actual.partitions:
        increases.append(IncreasePartitions(spec.name, actual.partitions, spec.partitions))
    elif spec.partitions < actual.partitions:
        warnings.append(
            PlanWarning(
                spec.name,
                f"has {actual.partitions} partitions, the catalogue says {spec.partitions}: "
                "Kafka cannot remove partitions (recreate the topic to shrink it)",
            )
        )
    if spec.replication_factor != actual.replication_factor:
        warnings.append(
            PlanWarning(
                spec.name,
                f"has replication factor {actual.replication_factor}, the catalogue says "
                f"{spec.replication_factor}: change it with a partition reassignment "
                "(kafka-reassign-partitions.sh), not applied here",
            )
        )
    desired = spec.desired_configs()
    configs = [
        SetConfig(spec.name, key, actual.configs.get(key), value)
        for key, value in desired.items()
        if not _same(key, actual.configs.get(key), value)
    ]
    undeclared = sorted(actual.overridden - desired.keys())
    if undeclared:
        # Left as they are (someone may have set them on purpose), but never hidden: "no
        # changes" read as "the topic is as the catalogue says" when it was not.
        settings = ", ".join(f"{key}={actual.configs.get(key, '')}" for key in undeclared)
        warnings.append(
            PlanWarning(
                spec.name,
                f"has {settings} set on the topic, which the catalogue does not declare: left "
                "as is (declare it, or delete it with kafka-configs.sh --alter --delete-config)",
            )
        )
    return increases, configs, warnings


def build_plan(catalogue: Catalogue, actual: Mapping[str, ActualTopic]) -> Plan:
    """The changes that make the cluster (``actual``, by topic name) match ``catalogue``."""
    creations: list[Change] = []
    increases: list[Change] = []
    configs: list[Change] = []
    warnings: list[PlanWarning] = []
    for spec in catalogue:
        existing = actual.get(spec.name)
        if existing is None:
            creations.append(CreateTopic(spec))
            continue
        topic_increases, topic_configs, topic_warnings = _topic_changes(spec, existing)
        increases.extend(topic_increases)
        configs.extend(topic_configs)
        warnings.extend(topic_warnings)
    return Plan(changes=(*creations, *increases, *configs), warnings=tuple(warnings))

"""The topics of one saga system: its participants' commands, their replies, its transitions.

Every orchestrator and participant of a saga system names the same :class:`SagaTopics`. Two
saga systems on one cluster (two teams, two products) each take a namespace of their own, so
neither reads the other's replies (an orchestrator dead-letters a reply for a saga it does not
know) nor shares its consumer groups' topics.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.sagas.definition import SagaDefinitionError, SagaRegistry
from pipeline.topics.catalogue import SAGA_NAMESPACE, saga_commands_topic
from pipeline.topics.spec import dlq_name, name_problem

__all__ = ["SagaTopics", "check_participants"]


@dataclass(frozen=True)
class SagaTopics:
    """``<namespace>.replies``, ``<namespace>.events`` and ``<namespace>.<participant>.commands``
    (the default namespace, ``saga``, gives the topics of ``pipeline topics apply``)."""

    namespace: str = SAGA_NAMESPACE

    def __post_init__(self) -> None:
        # The longest of its own topics is the replies' dead-letter topic.
        problem = name_problem(dlq_name(self.replies)) if self.namespace else "it is empty"
        if problem:
            raise ValueError(f"saga topic namespace {self.namespace!r}: {problem}")

    def participant_problem(self, participant: str) -> str | None:
        """Why ``participant`` cannot name a participant here (its commands topic, or that
        topic's dead-letter topic, would not be a topic name), or ``None``."""
        if not participant:
            return "the name is empty"
        return name_problem(dlq_name(self.commands(participant)))

    @property
    def replies(self) -> str:
        """Every participant's replies, read by the orchestrators."""
        return f"{self.namespace}.replies"

    @property
    def events(self) -> str:
        """Every saga transition, as a CloudEvent."""
        return f"{self.namespace}.events"

    def commands(self, participant: str) -> str:
        """The commands of one participant."""
        return saga_commands_topic(participant, self.namespace)


def check_participants(registry: SagaRegistry, topics: SagaTopics) -> None:
    """A :class:`SagaDefinitionError` for a step whose participant cannot name its topics in
    this namespace (its commands would go nowhere)."""
    for name, version in registry.held():
        for step in registry.get(name, version).steps():
            problem = topics.participant_problem(step.participant)
            if problem:
                raise SagaDefinitionError(
                    f"saga {name!r} version {version}, step {step.name!r}: participant "
                    f"{step.participant!r} names the topic {topics.commands(step.participant)} "
                    f"and its .dlq, and {problem}"
                )

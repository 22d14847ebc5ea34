"""Sagas: business transactions across services, with compensation.

Write a :class:`SagaDefinition` of steps (:class:`Step`, :class:`Parallel`, :func:`tcc`); the
state machine (:mod:`pipeline.sagas.machine`) is pure and runs the same under the orchestrator
and in tests.
"""

from pipeline.sagas.definition import (
    Call,
    Parallel,
    SagaDefinition,
    SagaDefinitionError,
    SagaRegistry,
    Step,
    tcc,
)
from pipeline.sagas.graph import mermaid
from pipeline.sagas.machine import Decision, InvalidSagaId, OperatorError, Reply
from pipeline.sagas.state import TERMINAL, SagaState
from pipeline.sagas.topics import SagaTopics

__all__ = [
    "TERMINAL",
    "Call",
    "Decision",
    "InvalidSagaId",
    "OperatorError",
    "Parallel",
    "Reply",
    "SagaDefinition",
    "SagaDefinitionError",
    "SagaRegistry",
    "SagaState",
    "SagaTopics",
    "Step",
    "mermaid",
    "tcc",
]

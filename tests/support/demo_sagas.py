"""Sagas as the demo's tests store them: one step, a state, started some minutes from a time."""

from __future__ import annotations

from datetime import datetime, timedelta

from pipeline.sagas.state import SagaState, StepState


def saga_at(started: datetime, saga_id: str, status: str, minutes: int = 1) -> SagaState:
    """A ``CreateOrder`` saga ``saga_id`` in ``status``, started and updated ``minutes`` after
    ``started``."""
    at = started + timedelta(minutes=minutes)
    return SagaState(
        saga_id=saga_id,
        name="CreateOrder",
        version=1,
        data={},
        steps={"only": StepState()},
        status=status,
        started_at=at,
        updated_at=at,
    )

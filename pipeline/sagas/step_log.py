"""The participants' log of handled commands (``pipeline_saga_steps``): what each service
answered to each step of each saga, so that a command sent again gets its first answer back
instead of its effect again, and a compensation knows whether its action was done. Written in
the participant's own transaction, with its effects and its reply; deleted after
``sagas.step_log_retention_s`` when that is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from pipeline.database import metadata

__all__ = [
    "ParticipantOutcome",
    "StepOutcome",
    "delete_participant_outcomes",
    "participant_outcomes_of",
    "record_participant_outcomes",
    "saga_steps_table",
]

saga_steps_table = sa.Table(
    "pipeline_saga_steps",
    metadata,
    sa.Column("service", sa.String(255), primary_key=True),
    sa.Column("saga_id", sa.String(255), primary_key=True),
    sa.Column("step", sa.String(255), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("reply", sa.JSON, nullable=False),
    sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_pipeline_saga_steps_handled_at", "service", "handled_at"),
)


@dataclass(frozen=True)
class ParticipantOutcome:
    ok: bool
    reply: dict[str, Any]


_RECORD = sa.insert(saga_steps_table).values(
    {column: sa.bindparam(f"p_{column.name}", type_=column.type) for column in saga_steps_table.c}
)


_OUTCOMES_OF_SAGAS = sa.select(
    saga_steps_table.c.saga_id,
    saga_steps_table.c.step,
    saga_steps_table.c.kind,
    saga_steps_table.c.ok,
    saga_steps_table.c.reply,
).where(
    saga_steps_table.c.service == sa.bindparam("p_service"),
    saga_steps_table.c.saga_id.in_(sa.bindparam("p_saga_ids", expanding=True)),
)


def participant_outcomes_of(
    session: Session | Connection, service: str, saga_ids: Sequence[str]
) -> dict[tuple[str, str], dict[str, ParticipantOutcome]]:
    """The outcomes ``service`` recorded for the steps of ``saga_ids``, by ``(saga id, step)``
    and kind (one query for them all)."""
    if not saga_ids:
        return {}
    rows = session.execute(_OUTCOMES_OF_SAGAS, {"p_service": service, "p_saga_ids": list(saga_ids)})
    outcomes: dict[tuple[str, str], dict[str, ParticipantOutcome]] = {}
    for row in rows:
        step = outcomes.setdefault((row.saga_id, row.step), {})
        step[row.kind] = ParticipantOutcome(bool(row.ok), dict(row.reply))
    return outcomes


class StepOutcome(NamedTuple):
    """One row of the participants' log: what ``service`` answered to one command."""

    service: str
    saga_id: str
    step: str
    kind: str
    ok: bool
    reply: dict[str, Any]
    handled_at: datetime


def record_participant_outcomes(
    session: Session | Connection, outcomes: Sequence[StepOutcome]
) -> None:
    """Record ``outcomes`` in one statement."""
    if outcomes:
        session.execute(
            _RECORD,
            [
                {
                    f"p_{name}": value
                    for name, value in zip(StepOutcome._fields, outcome, strict=True)
                }
                for outcome in outcomes
            ],
        )


_OLD_STEPS = (
    sa.select(saga_steps_table.c.saga_id, saga_steps_table.c.step, saga_steps_table.c.kind)
    .where(
        saga_steps_table.c.service == sa.bindparam("p_service"),
        saga_steps_table.c.handled_at < sa.bindparam("p_before"),
    )
    .order_by(saga_steps_table.c.handled_at)
    .limit(sa.bindparam("p_limit"))
)
_DELETE_STEP = sa.delete(saga_steps_table).where(
    saga_steps_table.c.service == sa.bindparam("p_service"),
    saga_steps_table.c.saga_id == sa.bindparam("p_saga_id"),
    saga_steps_table.c.step == sa.bindparam("p_step"),
    saga_steps_table.c.kind == sa.bindparam("p_kind"),
)


def delete_participant_outcomes(
    engine: Engine, service: str, *, handled_before: datetime, batch_size: int = 1_000
) -> int:
    """Delete the rows of ``service``'s log handled before ``handled_before``, oldest first,
    ``batch_size`` per transaction (short locks); returns how many were deleted."""
    deleted = 0
    while True:
        with engine.begin() as connection:
            rows = connection.execute(
                _OLD_STEPS,
                {"p_service": service, "p_before": handled_before, "p_limit": batch_size},
            ).all()
            if rows:
                connection.execute(
                    _DELETE_STEP,
                    [
                        {"p_service": service, "p_saga_id": saga_id, "p_step": step, "p_kind": kind}
                        for saga_id, step, kind in rows
                    ],
                )
        deleted += len(rows)
        if len(rows) < batch_size:
            return deleted

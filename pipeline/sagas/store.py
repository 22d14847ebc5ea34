"""Saga instances in SQL: insert, load, save with a revision check, find the due ones.

The row holds the whole :class:`~pipeline.sagas.state.SagaState` as JSON; ``status`` and
``next_deadline`` are copied into columns of their own so listing by state and finding due
deadlines use an index, and its topic ``namespace`` into one of its own so that the
orchestrators of several saga systems sharing a database each find only their own sagas. Every
save checks the revision it loaded (optimistic concurrency): of a reply and a deadline of one
saga handled at the same moment by two orchestrators, one commits and the other's transaction
fails with :class:`ConcurrentSagaUpdate` and is tried again on the new state.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from pipeline.database import metadata
from pipeline.errors import PipelineError
from pipeline.sagas.state import TERMINAL, SagaState
from pipeline.topics.catalogue import SAGA_NAMESPACE

__all__ = [
    "ConcurrentSagaUpdate",
    "SagaExists",
    "SagaRow",
    "StoredSaga",
    "UnreadableSagaState",
    "count_by_status",
    "delete_ended_sagas",
    "due_saga_ids",
    "in_namespace",
    "insert_saga",
    "list_sagas",
    "load_saga",
    "load_sagas",
    "open_saga_count",
    "saga_ids_by_status",
    "sagas_table",
    "save_saga",
    "save_sagas",
    "set_derived_columns",
]

sagas_table = sa.Table(
    "pipeline_sagas",
    metadata,
    sa.Column("saga_id", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("state", sa.JSON, nullable=False),
    sa.Column("next_deadline", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("next_resend", sa.DateTime(timezone=True), nullable=True),
    # From the state, at every save (a saga never changes namespace); migration 0008. NULL: a
    # row inserted by a version before this column: counted, listed and deleted as one of the
    # default namespace, and looked at by every orchestrator when due (which sets it from the
    # state, as any save of it does).
    sa.Column("namespace", sa.String(255), nullable=True),
    sa.Index("ix_pipeline_sagas_status", "status", "updated_at"),
    sa.Index("ix_pipeline_sagas_next_deadline", "next_deadline"),
    sa.Index("ix_pipeline_sagas_next_resend", "next_resend"),
)


class ConcurrentSagaUpdate(PipelineError):
    """The saga changed since it was loaded; the transaction is rolled back and tried again."""


class SagaExists(PipelineError):
    """A saga with this id was started already."""


class UnreadableSagaState(PipelineError):
    """A saga's stored state is not one this version of the pipeline can read (written by
    another version, or by hand); the message names the saga and the first problem."""


@dataclass(frozen=True)
class StoredSaga:
    state: SagaState
    revision: int


def in_namespace(namespace: str) -> sa.ColumnElement[bool]:
    """The rows of the topic ``namespace``; those of no namespace yet (see ``sagas_table``)
    count as the default one's."""
    column = sagas_table.c.namespace
    if namespace == SAGA_NAMESPACE:
        return sa.or_(column == namespace, column.is_(None))
    return column == namespace


def _utc(moment: datetime | None) -> datetime | None:
    # SQLite hands times back without their zone; every stored time is UTC.
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _state_json(state: SagaState) -> str:
    """The state as stored, JSON text written by pydantic-core itself: without the namespace
    when it is the default one, so that a row reads as before namespaces existed (an
    orchestrator of the version before, in a rolling deploy, refuses a field it does not
    know)."""
    exclude = _DEFAULT_NAMESPACE if state.namespace == SAGA_NAMESPACE else None
    try:
        return state.model_dump_json(exclude=exclude)
    except PydanticSerializationError:
        # What pydantic-core's writer refuses and the json module writes, as every version
        # before did: a lone surrogate in a string of the data (as its escape), nesting past
        # pydantic-core's 255 levels. PostgreSQL's json takes both.
        return json.dumps(state.model_dump(mode="json", exclude=exclude))


_DEFAULT_NAMESPACE = {"namespace"}


class _StateText(sa.types.TypeDecorator[str]):
    """The ``state`` column's JSON as text, bound as it is: the saga statements hand pydantic
    the text to parse and take the text it writes, where a dict between them cost as much
    again (SQLAlchemy's and psycopg's JSON on top of pydantic's own; every reply loads and
    saves its saga's whole state, its timeline included). PostgreSQL still checks it is JSON."""

    impl = sa.JSON
    cache_ok = True

    def bind_processor(self, dialect: sa.Dialect) -> None:
        return None  # the text as given: no json.dumps of it

    def result_processor(self, dialect: sa.Dialect, coltype: object) -> None:
        return None


#: The state read as its text (PostgreSQL's json cast to text: the driver would decode it).
_STATE_TEXT = sa.cast(sagas_table.c.state, sa.Text).label("state")


def _columns(state: SagaState) -> dict[str, Any]:
    return {
        "status": state.status,
        "state": _state_json(state),
        "next_deadline": None if state.is_terminal else state.next_deadline,
        "next_resend": None if state.is_terminal else state.next_resend,
        "updated_at": state.updated_at,
        "namespace": state.namespace,
    }


# The statements of every reply and command, built once: building a statement and its cache
# key costs SQLAlchemy several times what running it does (reused, the key is memoised). The
# parameter names differ from the columns' (an UPDATE reserves those for its SET clause).
# The insert is SQL text: SQLAlchemy has no cache key for an INSERT ... ON CONFLICT and would
# compile it again for each saga. PostgreSQL and SQLite (3.24 or later) both understand it.
_INSERT = sa.text(
    f"INSERT INTO {sagas_table.name} ({', '.join(c.name for c in sagas_table.c)}) "
    f"VALUES ({', '.join(f':p_{c.name}' for c in sagas_table.c)}) "
    "ON CONFLICT (saga_id) DO NOTHING"
).bindparams(
    *(
        sa.bindparam(
            f"p_{column.name}", type_=_StateText() if column.key == "state" else column.type
        )
        for column in sagas_table.c
    )
)
_LOAD = sa.select(_STATE_TEXT, sagas_table.c.revision).where(
    sagas_table.c.saga_id == sa.bindparam("p_saga_id")
)
_LOAD_MANY = sa.select(sagas_table.c.saga_id, _STATE_TEXT, sagas_table.c.revision).where(
    sagas_table.c.saga_id.in_(sa.bindparam("p_saga_ids", expanding=True))
)
_SAVE = (
    sa.update(sagas_table)
    .where(
        sagas_table.c.saga_id == sa.bindparam("p_saga_id"),
        sagas_table.c.revision == sa.bindparam("p_revision"),
    )
    .values(
        {
            sagas_table.c[name]: sa.bindparam(
                f"p_new_{name}", type_=_StateText() if name == "state" else sagas_table.c[name].type
            )
            for name in (
                "revision",
                "status",
                "state",
                "next_deadline",
                "next_resend",
                "updated_at",
                "namespace",
            )
        }
    )
)


def insert_saga(session: Session | Connection, state: SagaState) -> None:
    """Insert a new saga in the caller's transaction (one statement); :class:`SagaExists` for
    a known id."""
    values = {
        "saga_id": state.saga_id,
        "name": state.name,
        "version": state.version,
        "revision": 1,
        "created_at": state.started_at,
        **_columns(state),
    }
    inserted = session.execute(_INSERT, {f"p_{name}": value for name, value in values.items()})
    if inserted.rowcount != 1:  # type: ignore[attr-defined]
        raise SagaExists(f"saga {state.saga_id} exists already")


def load_saga(session: Session | Connection, saga_id: str) -> StoredSaga | None:
    row = session.execute(_LOAD, {"p_saga_id": saga_id}).first()
    if row is None:
        return None
    return StoredSaga(_state_of(saga_id, row.state), row.revision)


def load_sagas(session: Session | Connection, saga_ids: Sequence[str]) -> dict[str, StoredSaga]:
    """The sagas of ``saga_ids`` that exist, by id (one query)."""
    if not saga_ids:
        return {}
    rows = session.execute(_LOAD_MANY, {"p_saga_ids": list(saga_ids)}).all()
    return {
        row.saga_id: StoredSaga(_state_of(row.saga_id, row.state), row.revision) for row in rows
    }


def _state_of(saga_id: str, stored: str) -> SagaState:
    """The state of a row from its JSON text; :class:`UnreadableSagaState` naming the saga and
    the first problem when it is no JSON (or nested past the parser's depth) or does not
    validate."""
    try:
        return SagaState.model_validate_json(stored)
    except ValidationError as error:
        if error.errors(include_url=False, include_input=False)[0]["type"] != "json_invalid":
            raise _unreadable(saga_id, error) from error
    # pydantic-core's parser refuses some JSON the json module reads, and earlier versions (or
    # _state_json) wrote: a lone surrogate's escape, nesting past 200 levels. Read as before.
    try:
        parsed = json.loads(stored)
    except (ValueError, RecursionError) as error:
        raise _unreadable(saga_id, f"not JSON: {error}") from error
    try:
        return SagaState.model_validate(parsed)
    except ValidationError as error:
        raise _unreadable(saga_id, error) from error


def _unreadable(saga_id: str, problem: ValidationError | str) -> UnreadableSagaState:
    """The error of a row whose state does not read: ``problem``, or the first of a
    validation's problems (and how many more)."""
    from pipeline.sagas.machine import shown_saga_id

    if isinstance(problem, ValidationError):
        problems = problem.errors(include_url=False, include_input=False)
        # The field's name comes from the stored JSON: written out, on one line.
        where = ".".join(str(part) for part in problems[0]["loc"])[:100]
        where = "".join(c if c.isprintable() else repr(c)[1:-1] for c in where)
        first = problems[0]["msg"]
        more = f" and {len(problems) - 1:,} more" if len(problems) > 1 else ""
        problem = f"{where}: {first}{more}" if where else f"{first}{more}"
    return UnreadableSagaState(
        f"saga {shown_saga_id(saga_id)}: its stored state is not readable by this version of "
        f"the pipeline ({problem})"
    )


def _save_parameters(state: SagaState, revision: int) -> dict[str, Any]:
    values = {"revision": revision + 1, **_columns(state)}
    return {
        "p_saga_id": state.saga_id,
        "p_revision": revision,
        **{f"p_new_{name}": value for name, value in values.items()},
    }


def save_saga(session: Session | Connection, state: SagaState, revision: int) -> int:
    """Store ``state`` over the row loaded at ``revision``; returns the new revision."""
    result = session.execute(_SAVE, _save_parameters(state, revision))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConcurrentSagaUpdate(
            f"saga {state.saga_id} changed since revision {revision}; trying again"
        )
    return revision + 1


def save_sagas(session: Session | Connection, saves: Sequence[tuple[SagaState, int]]) -> None:
    """:func:`save_saga` for many sagas (``(state, revision loaded)`` each) in one statement;
    :class:`ConcurrentSagaUpdate` when any of them changed since it was loaded (the caller's
    transaction is then rolled back: which one is not told)."""
    if not saves:
        return
    if len(saves) == 1:
        save_saga(session, *saves[0])
        return
    result = session.execute(
        _SAVE, [_save_parameters(state, revision) for state, revision in saves]
    )
    # The total of the rows updated (psycopg and sqlite3 both sum an executemany's counts).
    if result.rowcount != len(saves):  # type: ignore[attr-defined]
        raise ConcurrentSagaUpdate(
            f"{len(saves) - result.rowcount} of {len(saves)} sagas changed since they were "  # type: ignore[attr-defined]
            "loaded; trying again"
        )


def set_derived_columns(session: Session | Connection, state: SagaState, revision: int) -> None:
    """Set the row's columns copied from ``state`` (loaded at ``revision``, not changed):
    ``next_deadline``, ``next_resend`` and ``namespace``. For a row an orchestrator found with
    columns its state contradicts: saved by an older version, before migration 0007 gave it
    ``next_resend`` (found due with nothing due), or inserted by a version before 0008's
    ``namespace`` column (found with none, by every saga system's orchestrators)."""
    columns = _columns(state)
    session.execute(
        sa.update(sagas_table)
        .where(sagas_table.c.saga_id == state.saga_id, sagas_table.c.revision == revision)
        .values(
            next_deadline=columns["next_deadline"],
            next_resend=columns["next_resend"],
            namespace=columns["namespace"],
        )
    )


def due_saga_ids(
    session: Session | Connection,
    now: datetime,
    limit: int,
    definitions: Collection[tuple[str, int]] | None = None,
    replies_read_through: datetime | None = None,
    namespace: str | None = None,
    excluded: Collection[str] = (),
) -> list[str]:
    """Sagas with a deadline or a backoff due at ``now``, earliest first (the caller locks
    each one as it handles it); only those of ``definitions`` (name, version) when given, so
    that sagas no definition here can run never hold up the others, and only those of the
    topic ``namespace`` when given (another saga system's, in the same database, neither). With
    ``replies_read_through``, a timeout counts only when due by then too (a backoff at
    ``now``): see :func:`pipeline.sagas.machine.on_due`. Sagas ``excluded`` are not listed."""
    columns = sagas_table.c
    if replies_read_through is None or replies_read_through >= now:
        due = columns.next_deadline <= now
    else:  # next_deadline is the earlier of the two: due by then, whatever it is
        due = sa.or_(columns.next_deadline <= replies_read_through, columns.next_resend <= now)
    query = sa.select(columns.saga_id).where(due)
    if namespace is not None:  # and those of no namespace yet: see sagas_table
        query = query.where(sa.or_(columns.namespace == namespace, columns.namespace.is_(None)))
    if definitions is not None:
        query = query.where(
            sa.or_(
                sa.false(),
                *(
                    sa.and_(sagas_table.c.name == name, sagas_table.c.version == version)
                    for name, version in sorted(definitions)
                ),
            )
        )
    if excluded:  # sagas left aside: they must not fill the limit either
        query = query.where(columns.saga_id.not_in(sorted(excluded)))
    query = query.order_by(sagas_table.c.next_deadline).limit(limit)
    return list(session.execute(query).scalars())


def open_saga_versions(
    session: Session | Connection, namespace: str | None = None
) -> dict[tuple[str, int], int]:
    """How many sagas that have not ended there are of each (name, version), of the topic
    ``namespace`` only when given."""
    query = (
        sa.select(sagas_table.c.name, sagas_table.c.version, sa.func.count())
        .where(sagas_table.c.status.not_in(sorted(TERMINAL)))
        .group_by(sagas_table.c.name, sagas_table.c.version)
    )
    if namespace is not None:
        query = query.where(in_namespace(namespace))
    return {(name, version): count for name, version, count in session.execute(query)}


_ENDED = sorted(TERMINAL)
_ENDED_BEFORE = (
    sa.select(sagas_table.c.saga_id, sagas_table.c.name, sagas_table.c.status)
    .where(sagas_table.c.status.in_(_ENDED), sagas_table.c.updated_at < sa.bindparam("p_before"))
    .limit(sa.bindparam("p_limit"))
)
# The status again: only a saga that ended is ever deleted, whatever happened since the read.
# RETURNING: what this statement deleted, not what was read (another orchestrator deleting
# the same rows at the same moment counts them itself).
_DELETE_ENDED = (
    sa.delete(sagas_table)
    .where(
        sagas_table.c.saga_id.in_(sa.bindparam("p_ids", expanding=True)),
        sagas_table.c.status.in_(_ENDED),
    )
    .returning(sagas_table.c.name, sagas_table.c.status)
)


def delete_ended_sagas(
    engine: Engine,
    *,
    ended_before: datetime,
    batch_size: int = 1_000,
    namespace: str | None = None,
) -> Counter[tuple[str, str]]:
    """Delete the sagas that ended (completed, compensated, resolved) before ``ended_before``
    (of the topic ``namespace`` only, when given), ``batch_size`` per transaction (short locks:
    orchestrators writing meanwhile are never held up for long); returns how many were deleted
    by ``(name, status)``. Open sagas and sagas waiting for an operator are never deleted; an
    ended saga never changes again, so several orchestrators deleting at once at worst read the
    same rows, and each row is deleted and counted once."""
    deleted: Counter[tuple[str, str]] = Counter()
    ended_before_query = (
        _ENDED_BEFORE if namespace is None else _ENDED_BEFORE.where(in_namespace(namespace))
    )
    while True:
        with engine.begin() as connection:
            rows = connection.execute(
                ended_before_query, {"p_before": ended_before, "p_limit": batch_size}
            ).all()
            if rows:
                gone = connection.execute(_DELETE_ENDED, {"p_ids": [row.saga_id for row in rows]})
                deleted.update((name, status) for name, status in gone)
        if len(rows) < batch_size:
            return deleted


def count_ended_sagas(engine: Engine, *, ended_before: datetime) -> Counter[tuple[str, str]]:
    """How many sagas :func:`delete_ended_sagas` would delete now, by ``(name, status)``."""
    query = (
        sa.select(sagas_table.c.name, sagas_table.c.status, sa.func.count())
        .where(sagas_table.c.status.in_(_ENDED), sagas_table.c.updated_at < ended_before)
        .group_by(sagas_table.c.name, sagas_table.c.status)
    )
    with engine.connect() as connection:
        return Counter({(name, status): int(n) for name, status, n in connection.execute(query)})


@dataclass(frozen=True)
class SagaRow:
    saga_id: str
    name: str
    version: int
    status: str
    created_at: datetime
    updated_at: datetime
    next_deadline: datetime | None


def list_sagas(
    connection: Connection | Session,
    *,
    status: str | None = None,
    name: str | None = None,
    namespace: str | None = None,
    limit: int = 50,
) -> list[SagaRow]:
    """The newest sagas first, optionally of one status, one definition name or one topic
    namespace."""
    query = sa.select(
        sagas_table.c.saga_id,
        sagas_table.c.name,
        sagas_table.c.version,
        sagas_table.c.status,
        sagas_table.c.created_at,
        sagas_table.c.updated_at,
        sagas_table.c.next_deadline,
    ).order_by(sagas_table.c.updated_at.desc(), sagas_table.c.saga_id)
    if status is not None:
        query = query.where(sagas_table.c.status == status)
    if name is not None:
        query = query.where(sagas_table.c.name == name)
    if namespace is not None:
        query = query.where(in_namespace(namespace))
    rows = connection.execute(query.limit(limit)).all()
    return [
        SagaRow(
            saga_id=row.saga_id,
            name=row.name,
            version=row.version,
            status=row.status,
            created_at=_utc(row.created_at) or row.created_at,
            updated_at=_utc(row.updated_at) or row.updated_at,
            next_deadline=_utc(row.next_deadline),
        )
        for row in rows
    ]


def count_by_status(
    connection: Connection | Session, *, name: str | None = None, namespace: str | None = None
) -> dict[str, int]:
    """How many sagas are in each state (only those of the saga ``name``, or of the topic
    ``namespace``, when given)."""
    query = sa.select(sagas_table.c.status, sa.func.count()).group_by(sagas_table.c.status)
    if name is not None:
        query = query.where(sagas_table.c.name == name)
    if namespace is not None:
        query = query.where(in_namespace(namespace))
    rows = connection.execute(query).all()
    return {status: int(count) for status, count in rows}


def open_saga_count(connection: Connection | Session) -> int:
    """Sagas not yet in a terminal state."""
    return int(
        connection.execute(
            sa.select(sa.func.count())
            .select_from(sagas_table)
            .where(sagas_table.c.status.not_in(sorted(TERMINAL)))
        ).scalar_one()
    )


def saga_ids_by_status(connection: Connection | Session, statuses: Sequence[str]) -> list[str]:
    return list(
        connection.execute(
            sa.select(sagas_table.c.saga_id).where(sagas_table.c.status.in_(list(statuses)))
        ).scalars()
    )

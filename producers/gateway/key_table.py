"""The API keys' table (``pipeline_gateway_keys``, migrations 0004 and 0009): add, list,
revoke, rotate, load.

Only the key id and the digest of the secret are stored (see :mod:`producers.gateway.keys`);
the key itself exists once, in what :func:`add_key` (or :func:`rotate_key`) returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import JSON, Column, DateTime, String, Table, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from pipeline.database import metadata
from pipeline.errors import PipelineError
from producers.gateway.keys import ApiKey, new_key

__all__ = [
    "KeyExists",
    "KeyRevoked",
    "NoSuchKey",
    "Rotated",
    "RotatedMeanwhile",
    "add_key",
    "keys_table",
    "load_keys",
    "revoke_key",
    "rotate_key",
]

keys_table = Table(
    "pipeline_gateway_keys",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("key_id", String(32), nullable=False, unique=True),
    Column("secret_sha256", String(64), nullable=False),
    Column("request_types", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # 0009: the secret before the last rotation, accepted until previous_until.
    Column("previous_secret_sha256", String(64), nullable=True),
    Column("previous_until", DateTime(timezone=True), nullable=True),
    Column("rotated_at", DateTime(timezone=True), nullable=True),
)


class KeyExists(PipelineError):
    """A key of that name exists already (revoked or not: names are never reused)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"an API key named {name!r} exists already; choose another name")


class NoSuchKey(PipelineError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no API key named {name!r}; `pipeline gateway keys list` shows them")


class KeyRevoked(PipelineError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"the API key {name!r} is revoked: a revoked key is not rotated (add a new key, "
            "under another name: names are never reused)"
        )


class RotatedMeanwhile(PipelineError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"the API key {name!r} was rotated or revoked by another command meanwhile: "
            "nothing changed here; `pipeline gateway keys list` shows it now"
        )


@dataclass(frozen=True)
class Rotated:
    """A rotation's outcome: the new key (shown once), until when the secret before it is
    accepted (``None``: not at all), and until when the one before *that* would have been,
    had this rotation not ended it (``None``: none was still accepted)."""

    key: str = field(repr=False)
    previous_until: datetime | None
    cut_short: datetime | None


def _now() -> datetime:
    return datetime.now(UTC)


def add_key(engine: Engine, name: str, request_types: Iterable[str]) -> str:
    """Record a new key named ``name`` allowed ``request_types``; returns the key, which is
    never stored and cannot be shown again."""
    made = new_key()
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(keys_table).values(
                    name=name,
                    key_id=made.key_id,
                    secret_sha256=made.secret_sha256,
                    request_types=sorted(set(request_types)),
                    created_at=_now(),
                    revoked_at=None,
                )
            )
    except IntegrityError:
        raise KeyExists(name) from None
    return made.key


def revoke_key(engine: Engine, name: str) -> datetime:
    """Revoke the key named ``name`` (again: no change); returns when it was revoked."""
    with engine.begin() as connection:
        revoked_at = connection.execute(
            select(keys_table.c.revoked_at).where(keys_table.c.name == name)
        ).first()
        if revoked_at is None:
            raise NoSuchKey(name)
        if revoked_at[0] is not None:
            return _aware(revoked_at[0])
        now = _now()
        connection.execute(
            update(keys_table).where(keys_table.c.name == name).values(revoked_at=now)
        )
        return now


def rotate_key(engine: Engine, name: str, keep_old_for: timedelta) -> Rotated:
    """A new secret for the key named ``name``, under the same name and key id (the same
    client); the secret before it is still accepted for ``keep_old_for`` (zero: no more).

    Only one secret before is kept: one still accepted from an earlier rotation is refused
    from now on (said in :attr:`Rotated.cut_short`). The change is made only if the key is as
    read (a compare-and-set on its digest), so two rotations at once cannot both win."""
    if keep_old_for < timedelta(0):
        raise ValueError(f"keep_old_for must be >= 0, got {keep_old_for!r}")
    with engine.begin() as connection:
        row = connection.execute(
            select(
                keys_table.c.key_id,
                keys_table.c.secret_sha256,
                keys_table.c.revoked_at,
                keys_table.c.previous_secret_sha256,
                keys_table.c.previous_until,
            ).where(keys_table.c.name == name)
        ).first()
        if row is None:
            raise NoSuchKey(name)
        if row.revoked_at is not None:
            raise KeyRevoked(name)
        now = _now()
        made = new_key(row.key_id)
        keep = keep_old_for > timedelta(0)
        previous_until = now + keep_old_for if keep else None
        updated = connection.execute(
            update(keys_table)
            .where(
                keys_table.c.name == name,
                keys_table.c.secret_sha256 == row.secret_sha256,
                keys_table.c.revoked_at.is_(None),
            )
            .values(
                secret_sha256=made.secret_sha256,
                previous_secret_sha256=row.secret_sha256 if keep else None,
                previous_until=previous_until,
                rotated_at=now,
            )
        )
        if updated.rowcount != 1:
            raise RotatedMeanwhile(name)
    earlier = None if row.previous_until is None else _aware(row.previous_until)
    cut_short = earlier if row.previous_secret_sha256 and earlier and earlier > now else None
    return Rotated(made.key, previous_until, cut_short)


def load_keys(engine: Engine) -> list[ApiKey]:
    """Every key record, revoked ones too, by name."""
    with engine.connect() as connection:
        rows = connection.execute(select(keys_table).order_by(keys_table.c.name)).all()
    return [
        ApiKey(
            name=row.name,
            key_id=row.key_id,
            secret_sha256=row.secret_sha256,
            request_types=frozenset(row.request_types),
            created_at=_aware(row.created_at),
            revoked_at=_maybe_aware(row.revoked_at),
            previous_secret_sha256=row.previous_secret_sha256,
            previous_until=_maybe_aware(row.previous_until),
            rotated_at=_maybe_aware(row.rotated_at),
        )
        for row in rows
    ]


def _maybe_aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else _aware(moment)


def _aware(moment: datetime) -> datetime:
    # SQLite gives back naive datetimes; they were written in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

"""The API keys' table (``pipeline_gateway_keys``, migration 0004): add, list, revoke, load.

Only the key id and the digest of the secret are stored (see :mod:`producers.gateway.keys`);
the key itself exists once, in what :func:`add_key` returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import JSON, Column, DateTime, String, Table, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from pipeline.database import metadata
from pipeline.errors import PipelineError
from producers.gateway.keys import ApiKey, new_key

__all__ = ["KeyExists", "NoSuchKey", "add_key", "keys_table", "load_keys", "revoke_key"]

keys_table = Table(
    "pipeline_gateway_keys",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("key_id", String(32), nullable=False, unique=True),
    Column("secret_sha256", String(64), nullable=False),
    Column("request_types", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)


class KeyExists(PipelineError):
    """A key of that name exists already (revoked or not: names are never reused)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"an API key named {name!r} exists already; choose another name")


class NoSuchKey(PipelineError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no API key named {name!r}; `pipeline gateway keys list` shows them")


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
            revoked_at=None if row.revoked_at is None else _aware(row.revoked_at),
        )
        for row in rows
    ]


def _aware(moment: datetime) -> datetime:
    # SQLite gives back naive datetimes; they were written in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

"""Fixtures of the pipeline package's unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from pipeline.database import build_engine, migrate
from pipeline.settings import DatabaseSettings


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite service database of the test's own, migrated (inbox, parked keys, outbox)."""
    engine = build_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'service.db'}"))
    migrate(engine)
    yield engine
    engine.dispose()

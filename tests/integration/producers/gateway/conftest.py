"""The catalogue's topics, for the gateway tests that produce to ``requests.orders``: a
session that runs them alone on a stack just started must not depend on another test having
created it (a message to a missing topic waits out the whole produce timeout: a 503). And an
engine on the session's PostgreSQL, migrated, for the tests of the stores kept there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from pipeline.database import build_engine, migrate
from pipeline.settings import DatabaseSettings
from tests.support.stack_cli import run_pipeline


@pytest.fixture(scope="session")
def catalogue_topics(pipeline_stack) -> None:
    applied = run_pipeline("topics", "apply")
    assert applied.returncode == 0, applied.stderr


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    """An engine on the session's PostgreSQL database, migrated."""
    engine = build_engine(DatabaseSettings(url=postgres_url))
    migrate(engine)
    yield engine
    engine.dispose()

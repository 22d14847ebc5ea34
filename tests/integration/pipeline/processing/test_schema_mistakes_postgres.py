"""A missing table or column is the handler's error on PostgreSQL, as on SQLite (see
tests/unit/pipeline/processing/test_schema_mistakes.py): the same classification."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from pipeline.processing.attempt import is_unavailable


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO nowhere VALUES (1)",
        "INSERT INTO orders (missing) VALUES (1)",
        "SELECT total FROM orders",
    ],
)
def test_a_missing_table_or_column_on_postgres_is_not_unavailability(postgres_url, statement):
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE orders (id INTEGER)"))
        with pytest.raises(DBAPIError) as caught, engine.begin() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()

    assert not is_unavailable(caught.value)


def test_a_read_only_postgres_is_unavailability_not_the_events_fault(postgres_url):
    # A standby after a failover (or default_transaction_read_only): its InternalError was the
    # handler's error, so events were retried, dead-lettered, and then processed all the same.
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE orders (id INTEGER)"))
        with pytest.raises(DBAPIError) as caught, engine.begin() as connection:
            connection.execute(text("SET TRANSACTION READ ONLY"))
            connection.execute(text("INSERT INTO orders VALUES (1)"))
    finally:
        engine.dispose()

    assert "read-only transaction" in str(caught.value)
    assert is_unavailable(caught.value)

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

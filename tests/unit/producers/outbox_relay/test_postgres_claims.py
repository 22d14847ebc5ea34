"""The PostgreSQL claim's statements, as the psycopg dialect sends them (no database)."""

from sqlalchemy.dialects.postgresql import psycopg

from producers.outbox_relay.postgres_claims import (
    LOCK_NAMESPACE,
    claim_rows,
    mark_published,
    try_locks,
)

DIALECT = psycopg.dialect()


def _sql(statement):
    compiled = statement.compile(dialect=DIALECT)
    return " ".join(str(compiled).split()), compiled.params


def test_the_bucket_locks_are_tried_in_one_statement_in_the_outbox_namespace():
    sql, params = _sql(try_locks([3, 5]))
    assert sql == (
        "SELECT b FROM unnest(%(buckets)s::INTEGER[]) AS b "
        "WHERE pg_try_advisory_xact_lock(%(namespace)s::INTEGER, b)"
    )
    assert params == {"buckets": [3, 5], "namespace": 0x6F627800}
    assert LOCK_NAMESPACE == 0x6F627800  # "obx\0": apart from the one-key migration lock


def test_the_claimed_rows_are_read_again_unpublished_in_position_order():
    sql, params = _sql(claim_rows([7, 9], 100))
    assert sql.endswith(
        "FROM pipeline_outbox WHERE pipeline_outbox.position = ANY (%(mine)s::BIGINT[]) "
        "AND pipeline_outbox.published_at IS NULL ORDER BY pipeline_outbox.position "
        "LIMIT %(param_1)s::INTEGER"
    )
    assert (params["mine"], params["param_1"]) == ([7, 9], 100)


def test_the_marks_are_one_update_over_an_array_of_positions():
    sql, params = _sql(mark_published([1, 2, 4]))
    assert sql == (
        "UPDATE pipeline_outbox SET published_at=%(published_at)s::TIMESTAMP WITH TIME ZONE "
        "WHERE pipeline_outbox.position = ANY (%(positions)s::BIGINT[])"
    )
    assert params["positions"] == [1, 2, 4]

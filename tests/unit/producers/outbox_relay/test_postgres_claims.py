"""The PostgreSQL claim's statements, as the driver gets them (no database)."""

from datetime import UTC, datetime

from producers.outbox_relay.postgres_claims import (
    CLAIM_SETTINGS,
    LOCK_NAMESPACE,
    claim_rows,
    mark_published,
    try_locks,
    window,
)


def test_the_claim_turns_off_synchronous_commit_and_bitmap_and_sequential_scans_locally():
    assert CLAIM_SETTINGS == (
        "SELECT set_config('synchronous_commit', 'off', true), "
        "set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true)"
    )


def test_a_window_reads_the_next_unpublished_rows_in_position_order():
    assert window(41, 4000) == (
        "SELECT position, aggregate_type, aggregate_id FROM pipeline_outbox "
        "WHERE published_at IS NULL AND position > %s ORDER BY position LIMIT %s",
        (41, 4000),
    )


def test_the_bucket_locks_are_tried_in_one_statement_in_the_outbox_namespace():
    assert try_locks((3, 5)) == (
        "SELECT b FROM unnest(%s::integer[]) AS b WHERE pg_try_advisory_xact_lock(%s, b)",
        ([3, 5], 0x6F627800),
    )
    assert LOCK_NAMESPACE == 0x6F627800  # "obx\0": apart from the one-key migration lock


def test_the_claimed_rows_are_read_again_unpublished_in_position_order_headers_as_text():
    assert claim_rows([7, 9], 100) == (
        "SELECT position, event_id, aggregate_type, aggregate_id, topic, payload, headers::text "
        "FROM pipeline_outbox WHERE position = ANY(%s::bigint[]) AND published_at IS NULL "
        "ORDER BY position LIMIT %s",
        ([7, 9], 100),
    )


def test_the_marks_are_one_update_over_an_array_of_positions_at_the_time_of_marking():
    before = datetime.now(UTC)
    sql, (published_at, positions) = mark_published((1, 2, 4))
    assert sql == (
        "UPDATE pipeline_outbox SET published_at = %s WHERE position = ANY(%s::bigint[])"
    )
    assert positions == [1, 2, 4]
    assert isinstance(published_at, datetime)
    assert before <= published_at <= datetime.now(UTC)

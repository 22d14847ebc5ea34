"""The outbox status table: what it says when published rows are not kept."""

from rich.console import Console

from pipeline.cli.outbox import status_table
from pipeline.outbox.table import OutboxStatus

STATUS = OutboxStatus(backlog=0, oldest_unpublished_age_s=None, published_last_minute=0, topics=())


def _rendered(table):
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_with_published_rows_deleted_the_table_says_why_none_count():
    text = _rendered(status_table(STATUS, published_kept=False))

    assert "PIPELINE_OUTBOX__RETENTION_S=0" in text
    assert "pipeline_outbox_published_total" in text


def test_with_published_rows_kept_there_is_no_such_note():
    assert "RETENTION_S" not in _rendered(status_table(STATUS))

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


def _relay_help() -> str:
    from typer.testing import CliRunner

    from pipeline.cli.main import app

    result = CliRunner().invoke(app, ["outbox", "relay", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.replace("│", " ").split())


def test_the_relay_help_says_rows_go_in_insert_order_and_what_exit_code_3_means():
    # It said "in commit order" (they go in position order, taken at insert: docs/outbox.md),
    # and exit code 3 only for rows not acknowledged, not for rows held back.
    text = _relay_help()

    assert "commit order" not in text
    assert "per aggregate they are published in the order they were inserted" in text
    assert (
        "3 (--once) some events were not acknowledged, or were held back (their topic does not "
        "exist, they are too large), and stay unpublished" in text
    )

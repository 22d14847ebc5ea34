"""A processor whose start hook fails: it reads a table that does not exist.

For the test that ``pipeline process`` then exits with one line and code 2. The topic is
``FAILING_START_TOPIC``.
"""

from __future__ import annotations

import os

from sqlalchemy import text
from sqlalchemy.engine import Engine

from pipeline.envelope import Event
from pipeline.processing import Processor, UnitOfWork

TOPIC = os.environ.get("FAILING_START_TOPIC", "failing-start.unset")
processor = Processor(f"failing-start-{TOPIC}")


@processor.on_start
def read_settings_table(database: Engine) -> None:
    with database.connect() as connection:
        connection.execute(text("SELECT value FROM no_such_settings_table"))


@processor.handler(TOPIC)
def handle(event: Event, unit: UnitOfWork) -> None:
    raise AssertionError("never reached: the start hook fails first")

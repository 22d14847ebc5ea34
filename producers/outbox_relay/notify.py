"""Waking an idle relay on PostgreSQL: LISTEN for the outbox's NOTIFY.

The insert trigger sends ``NOTIFY pipeline_outbox`` at each commit of new rows. The listener
holds its own psycopg connection (psycopg 3 directly: SQLAlchemy has no API for notifications),
so the relay's pool is not tied up while it waits. Without that connection (refused, lost) the
relay polls: it waits out the interval on its stop signal and looks again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import Engine

from pipeline.async_postgres import libpq_conninfo, without_password
from pipeline.database import error_text
from pipeline.outbox.table import NOTIFY_CHANNEL

__all__ = ["NotifyListener"]

_log = logging.getLogger(__name__)


class NotifyListener:
    """A psycopg connection that LISTENs on :data:`~pipeline.outbox.table.NOTIFY_CHANNEL`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conninfo = libpq_conninfo(engine)
        self._where = engine.url.set(drivername="postgresql").render_as_string(hide_password=True)
        self._connection: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any] | None:
        if self._connection is None or self._connection.closed:
            try:
                self._connection = psycopg.connect(self._conninfo, autocommit=True)
                # LISTEN is not a statement SQLAlchemy Core builds; psycopg quotes the channel.
                listen = sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL))
                self._connection.execute(listen)
            except psycopg.Error as error:
                _log.warning(
                    "cannot LISTEN on %s (polling instead): %s",
                    self._where,
                    without_password(str(error), self._engine),
                )
                self._connection = None
        return self._connection

    def open(self) -> None:
        """Connect and LISTEN now: nothing committed after this call goes unnoticed."""
        self._connect()

    def wait(self, timeout_s: float, stop: threading.Event) -> bool:
        """Wait up to ``timeout_s`` for a notification; ``True`` if one came.

        Without a connection, waits on ``stop`` instead (so a stop ends the wait at once).
        """
        connection = self._connect()
        if connection is None:
            stop.wait(timeout_s)
            return False
        try:
            for _ in connection.notifies(timeout=timeout_s, stop_after=1):
                return True
        except psycopg.Error as error:
            _log.warning("lost the LISTEN connection (reconnecting): %s", error_text(error))
            self.close()
        return False

    def drain(self) -> None:
        """Forget notifications already received: the next batch reads what they announced."""
        connection = self._connect()
        if connection is None:
            return
        try:
            for _ in connection.notifies(timeout=0):
                pass
        except psycopg.Error:
            self.close()

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None

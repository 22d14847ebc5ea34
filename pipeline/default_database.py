"""Where the default database lives: the SQLite file ``pipeline.db`` in the stack's home.

Kept apart from :mod:`pipeline.database` (SQLAlchemy) so that the ``pipeline`` command can
work out the default before any sub-command's help without loading SQLAlchemy.
"""

from __future__ import annotations

from pathlib import Path

#: The default database's file name, in the stack's home.
DEFAULT_DATABASE_FILE = "pipeline.db"


def default_database_url(home: Path) -> str:
    """The default database: the SQLite file :data:`DEFAULT_DATABASE_FILE` in ``home`` (the
    stack's home), one known place whatever the current folder."""
    return f"sqlite:///{home.expanduser().absolute() / DEFAULT_DATABASE_FILE}"

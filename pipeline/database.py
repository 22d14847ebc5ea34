"""The service database: one SQLAlchemy engine per process, and the schema migrations.

SQLite is the embedded default: the ``pipeline`` command uses the file ``pipeline.db`` in the
stack's home (``~/.local/share/pipeline``, or ``/var/lib/pipeline`` for root) whatever the
current folder, unless ``database.url`` is set (:mod:`pipeline.default_database`).
PostgreSQL is the production choice (``postgresql+psycopg://user@host/db``, the password kept
apart in ``database.password``). Every table of the project (inbox, parked keys, outbox) is
declared on :data:`metadata` and created by Alembic migrations in ``pipeline/migrations``,
applied with :func:`migrate` when a program that writes starts. A program that only reads
builds its engine with ``must_exist=True``, so it never creates a SQLite file.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import MetaData, create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.exc import DatabaseError as DriverDatabaseError
from sqlalchemy.pool import ConnectionPoolEntry

from pipeline.default_database import DEFAULT_DATABASE_FILE
from pipeline.errors import PipelineError
from pipeline.settings import PASSWORD_NOT_ENCODED, DatabaseSettings, shown_url
from pipeline.settings.base import SECRET_QUERY_PARAMETER

if TYPE_CHECKING:  # Alembic is imported by the functions that migrate: a command that only
    # reads, or `pipeline --help`, need not load it.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

__all__ = [
    "HEAD_REVISION",
    "DatabaseError",
    "build_engine",
    "create_sqlite_folder",
    "current_revision",
    "database_label",
    "error_text",
    "head_revision",
    "is_postgres",
    "metadata",
    "migrate",
    "new_sqlite_file",
]

#: Constraint names follow one convention, so migrations can name what they drop.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

logger = logging.getLogger("pipeline.database")

_MIGRATIONS = Path(__file__).with_name("migrations")
#: Any constant: the advisory lock that serialises concurrent migrations on PostgreSQL.
_MIGRATION_LOCK_ID = 0x706970656C696E65  # "pipeline"
#: The newest revision in pipeline/migrations/versions (a unit test holds it to Alembic's own
#: head). :func:`migrate` reads the database's revision first and skips Alembic at this one:
#: loading Alembic and its scripts costs ~0.2 s of CPU at every start of every program that
#: has a database, for nothing to do.
HEAD_REVISION = "0009_gateway_keys_rotation"


class DatabaseError(PipelineError):
    """The database cannot be reached, or its URL is not usable."""


def error_text(error: BaseException, most: int = 300) -> str:
    """A database error on one line, for a log: the driver's own words without the statement
    and parameters SQLAlchemy adds (the rows' data, an event's payload among them, has no
    place in a log line), at most ``most`` characters."""
    driver = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    return " ".join(str(driver).split())[:most] or type(driver).__name__


def _sqlite_pragmas(
    dbapi_connection: Any,
    _record: ConnectionPoolEntry,
    *,
    synchronous: str = "NORMAL",
    wal: bool = True,
) -> None:
    # WAL lets readers (status, cleanup) run beside the one writer; the busy timeout makes a
    # second writer wait instead of failing at once with "database is locked". synchronous:
    # see DatabaseSettings.sqlite_synchronous. ``wal=False`` (a program that only reads, which
    # may be pointed at another application's file): the file's journal mode is left as it is
    # (WAL is a lasting property of the file, set by the first of our programs that writes).
    cursor = dbapi_connection.cursor()
    if wal:
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.close()


def _sqlite_file(settings: DatabaseSettings) -> Path | None:
    """The file of a SQLite URL; ``None`` for other databases, in-memory ones, or a bad URL."""
    try:
        url = make_url(settings.url)
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def url_label(url: URL) -> str:
    """A database URL as it may be shown: no password, neither in the user info nor as a
    query parameter (``?password=...``, which SQLAlchemy's own hiding leaves)."""
    if url.host is not None and "@" in url.host:
        # A password with an "@" not percent-encoded: SQLAlchemy's password ends at it, and
        # the rest of the password starts the host. The host is what follows the last "@".
        url = url.set(host=url.host.rpartition("@")[2], password="***")
    return SECRET_QUERY_PARAMETER.sub(r"\1***", url.render_as_string(hide_password=True))


def database_label(settings: DatabaseSettings) -> str:
    """The database as a program names it when it starts: the URL without any password (a
    SQLite file's path made absolute)."""
    path = _sqlite_file(settings)
    if path is not None:
        return f"sqlite:///{path.absolute()}"
    if settings.url.count("@") > 1:  # a password with an "@" (refused by the settings)
        return "an unreadable URL"  # part of the password may be anywhere in it
    try:
        return url_label(make_url(settings.url))
    except (ArgumentError, ValueError):  # ValueError: a port that is no number
        return "an unreadable URL"  # it may hold a password anywhere


def new_sqlite_file(settings: DatabaseSettings) -> Path | None:
    """The SQLite file a program would make by opening the database, as an absolute path, when
    it is not there yet; ``None`` for a file that exists and for other databases."""
    path = _sqlite_file(settings)
    if path is None or path.exists():
        return None
    return path.absolute()


def create_sqlite_folder(settings: DatabaseSettings, home: Path) -> None:
    """For a program about to write to a SQLite file: create its folder when it is the default
    database's (:data:`~pipeline.default_database.DEFAULT_DATABASE_FILE` in the stack's
    ``home``, which may not exist yet); any other file's missing folder is a
    :class:`DatabaseError` (a typo in the URL would otherwise start an empty database, and
    everything handled before would be handled again). Nothing for other databases."""
    path = _sqlite_file(settings)
    if path is None:
        return
    folder = path.absolute().parent
    if folder.is_dir():
        return
    if path.absolute() == (home.expanduser().absolute() / DEFAULT_DATABASE_FILE):
        folder.mkdir(parents=True, exist_ok=True)
        return
    raise DatabaseError(
        f"the folder {folder} of the SQLite database {path.absolute()} does not exist: create "
        "it, or check PIPELINE_DATABASE__URL"
    )


#: The databases (as :func:`url_label` shows them) already warned of two passwords.
_TWO_PASSWORDS_WARNED: set[str] = set()


def _warn_of_two_passwords(url: URL, password: str) -> None:
    """One WARNING per database and process when its URL carries a password other than
    ``database.password``, which is the one used."""
    if url.password is None or url.password == password:
        return
    label = url_label(url)
    if label in _TWO_PASSWORDS_WARNED:
        return
    _TWO_PASSWORDS_WARNED.add(label)
    logger.warning(
        "database.url %s carries a password and PIPELINE_DATABASE__PASSWORD another: "
        "PIPELINE_DATABASE__PASSWORD is used; drop one of them",
        label,
    )


def build_engine(
    settings: DatabaseSettings, *, pool_size: int = 10, must_exist: bool = False
) -> Engine:
    """The engine for ``settings.url`` (no connection is made until first use).

    ``must_exist``: for a program that only reads; a SQLite file that is not there is a
    :class:`DatabaseError` (opening it would create an empty database).
    """
    try:
        url = make_url(settings.url)
    except ArgumentError:
        raise DatabaseError(
            f"database.url is not a database URL: {shown_url(settings.url)}"
        ) from None
    if url.get_backend_name() != "sqlite" and (
        settings.url.count("@") > 1 or (url.host is not None and "@" in url.host)
    ):  # the settings refuse it already; not shown: part of the password may be anywhere
        raise DatabaseError(f"database.url cannot be used: {PASSWORD_NOT_ENCODED}")
    # A password means nothing to SQLite (a file), whose driver refuses a URL with one: left
    # out, so that a shared environment's PIPELINE_DATABASE__PASSWORD does not break a SQLite URL.
    if settings.password is not None and url.get_backend_name() != "sqlite":
        _warn_of_two_passwords(url, settings.password.get_secret_value())
        url = url.set(password=settings.password.get_secret_value())
    path = _sqlite_file(settings)
    if must_exist and path is not None and not path.exists():
        raise DatabaseError(
            f"no database at {path.absolute()}: no program has written to it yet (set "
            "PIPELINE_DATABASE__URL to the database your programs use)"
        )
    try:
        if url.get_backend_name() == "sqlite":
            if url.database in (None, "", ":memory:"):
                engine = create_engine(url, connect_args={"timeout": 30})
            else:
                engine = create_engine(
                    url,
                    connect_args={"timeout": 30},
                    pool_size=pool_size,
                    max_overflow=pool_size,
                )
            pragmas = partial(
                _sqlite_pragmas, synchronous=settings.sqlite_synchronous, wal=not must_exist
            )
            event.listen(engine, "connect", pragmas)
            return engine
        # No pre-ping: it is one more round trip for every transaction. A connection that died
        # fails its statement instead; SQLAlchemy then drops the pool's stale connections, and
        # the processor retries the event (a database outage is retried without limit).
        return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)
    # An unknown dialect, its driver not installed, or a URL that does not read (a port that is
    # no number).
    except (ArgumentError, ImportError, ValueError) as error:
        where = url_label(url)
        reason = " ".join(str(error).split())
        if isinstance(error, ImportError) and url.drivername == "postgresql":
            reason += (
                " (the driver installed with the pipeline is psycopg 3: postgresql+psycopg://)"
            )
        elif url.drivername.split("+")[0] in ("postgres", "pg", "psql"):
            # libpq and Heroku-style URLs say postgres://, which SQLAlchemy does not take.
            reason += " (PostgreSQL's URL here starts postgresql+psycopg://)"
        raise DatabaseError(f"database.url {where} cannot be used: {reason}") from None


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@contextmanager
def _connect(engine: Engine) -> Iterator[Connection]:
    try:
        with engine.connect() as connection:
            yield connection
    # OperationalError (unreachable, refused, locked) and the driver's other database errors:
    # SQLite says "file is not a database" of a file that is something else.
    except DriverDatabaseError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        where = url_label(engine.url)
        raise DatabaseError(f"cannot use the database {where}: {reason}") from None


def migrate(engine: Engine) -> list[str] | None:
    """Bring the schema to the newest revision; safe when several programs start at once.
    Returns the revisions it migrated from (empty: a new database), or ``None`` when there was
    nothing to do (at the newest already, or migrated meanwhile by another program)."""
    with _connect(engine) as connection:
        if _at_head(connection):
            return None
        if is_postgres(engine):
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            connection.commit()
        elif engine.dialect.name == "sqlite":
            # No advisory lock in SQLite: the migration is one transaction holding the write
            # lock. A program starting meanwhile waits for it (the busy timeout), then finds the
            # schema migrated; without this, two programs on a new file both created the same
            # tables and one of them failed to start.
            connection.exec_driver_sql("BEGIN EXCLUSIVE")
            if _revisions(connection) == [HEAD_REVISION]:
                connection.commit()
                return None
        try:
            found = _refuse_unknown_revisions(connection, engine)
            from alembic import command

            try:
                command.upgrade(_alembic_config(connection), "head")
            except DBAPIError as error:  # e.g. another application's table of the same name
                connection.rollback()
                raise DatabaseError(
                    f"cannot create the pipeline's tables in {url_label(engine.url)}: "
                    f"{error_text(error)}{_migration_hint(error)}"
                ) from None
            connection.commit()
            if found != [HEAD_REVISION]:  # not done meanwhile by a program started with this
                # Which program migrated, and from where: an operator rolling out a version
                # could not tell from any log.
                logger.info(
                    "database %s: schema migrated from %s to %s",
                    url_label(engine.url),
                    ", ".join(found) or "nothing (a new database)",
                    HEAD_REVISION,
                )
                return found
            return None
        finally:
            if is_postgres(engine):
                connection.execute(
                    text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID}
                )
                connection.commit()


#: PostgreSQL's SQLSTATEs of a migration that met a name of the pipeline's taken by something
#: else: a table, column, index or schema already there (42P07, 42701, 42710, 42P06), or one
#: the migration found missing or different (42P01, 42703, 42704).
_NAME_TAKEN_STATES = frozenset({"42P07", "42701", "42710", "42P06", "42P01", "42703", "42704"})
#: A read-only transaction (a hot standby, default_transaction_read_only): 25006.
_READ_ONLY_STATES = frozenset({"25006"})
#: SQLite's words for the same (it has no SQLSTATE).
_NAME_TAKEN_WORDS = (
    "already exists",
    "no such table",
    "no such column",
    "has no column named",
    "duplicate column name",
)
_READ_ONLY_WORDS = ("readonly database", "read-only")


def _migration_hint(error: DBAPIError) -> str:
    """What a migration's failure suggests, in parentheses (nothing when it suggests nothing
    in particular): the database is read-only, or a name of the pipeline's tables is another
    application's."""
    state = getattr(error.orig, "sqlstate", None)
    said = error_text(error).lower()
    if state in _READ_ONLY_STATES or (state is None and any(w in said for w in _READ_ONLY_WORDS)):
        return (
            " (the database is read-only: a replica, or read-only by default? the pipeline "
            "needs a writable one)"
        )
    if state in _NAME_TAKEN_STATES or (state is None and any(w in said for w in _NAME_TAKEN_WORDS)):
        return (
            " (another application's table of that name? use a database or schema of the "
            "pipeline's own)"
        )
    return ""


def _refuse_unknown_revisions(connection: Connection, engine: Engine) -> list[str]:
    """A :class:`DatabaseError` for a database a newer version of the pipeline migrated (its
    revision is none this code knows): Alembic would fail with a traceback, and going on
    would run this code on a schema it does not know. Else the revisions it is at."""
    found = _revisions(connection)
    if is_postgres(engine):
        # A failed read (no alembic_version yet) aborts PostgreSQL's transaction: Alembic
        # starts its own. (SQLite's must stay open: it holds the write lock.)
        connection.rollback()
    unknown = [revision for revision in found if revision not in _known()]
    if unknown:
        connection.rollback()
        raise DatabaseError(
            f"{url_label(engine.url)} is at schema revision {', '.join(unknown)}, which this "
            f"version of the pipeline does not know (its newest is {HEAD_REVISION}): a newer "
            "version migrated it (run that version, or one at least as new), or another "
            "application's Alembic keeps its version there (give the pipeline a database or "
            "schema of its own)"
        )
    return found


@functools.cache
def _known() -> frozenset[str]:
    """Every revision of ``pipeline/migrations``."""
    return frozenset(script.revision for script in _scripts().walk_revisions())


def _scripts() -> ScriptDirectory:
    """Alembic's view of ``pipeline/migrations``."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return ScriptDirectory.from_config(config)


def _at_head(connection: Connection) -> bool:
    """Whether the database is at :data:`HEAD_REVISION` (revisions only move forward, so no
    lock is needed to see that)."""
    found = _revisions(connection)
    connection.rollback()  # leave no transaction open for the lock and Alembic
    return found == [HEAD_REVISION]


def _revisions(connection: Connection) -> list[str]:
    """The revisions the database records (none before the first migration), read in the
    connection's transaction."""
    try:
        return [
            row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))
        ]
    except DBAPIError:  # no such table yet: never migrated
        return []


class SchemaStatus(NamedTuple):
    """Where a database's schema stands against this version's migrations."""

    #: The revisions the database records (none: never migrated).
    found: list[str]
    #: The migrations not applied yet, oldest first: (revision, what it adds).
    pending: list[tuple[str, str]]
    #: Revisions this version does not know (a newer version migrated the database).
    unknown: list[str]


def schema_status(engine: Engine) -> SchemaStatus:
    """Read where ``engine``'s schema stands; changes nothing."""
    with _connect(engine) as connection:
        found = _revisions(connection)
        connection.rollback()
    unknown = [revision for revision in found if revision not in _known()]
    if unknown:
        return SchemaStatus(found, [], unknown)
    pending = [
        (script.revision, " ".join((script.doc or "").split()))
        for script in _scripts().iterate_revisions(HEAD_REVISION, found[0] if found else "base")
    ]
    return SchemaStatus(found, pending[::-1], [])


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (``None`` before the first migration)."""
    with _connect(engine) as connection:
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """The newest revision this code knows."""
    head = _scripts().get_current_head()
    assert head is not None
    return head

"""The service database: engines built from settings, one-line errors, idempotent migrations."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine, make_url

from pipeline.database import (
    HEAD_REVISION,
    DatabaseError,
    build_engine,
    create_sqlite_folder,
    current_revision,
    database_label,
    head_revision,
    is_postgres,
    migrate,
    url_label,
)
from pipeline.default_database import default_database_url
from pipeline.settings import DatabaseSettings


def sqlite_engine(tmp_path: Path) -> Engine:
    return build_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'service.db'}"))


def test_sqlite_connections_use_wal_a_busy_timeout_and_normal_sync(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)

    with engine.connect() as connection:
        journal = connection.execute(text("PRAGMA journal_mode")).scalar_one()
        busy = connection.execute(text("PRAGMA busy_timeout")).scalar_one()
        synchronous = connection.execute(text("PRAGMA synchronous")).scalar_one()

    assert (journal, busy, synchronous) == ("wal", 30000, 1)  # 1 is NORMAL
    assert not is_postgres(engine)
    engine.dispose()


def test_a_program_that_only_reads_leaves_the_files_journal_mode_alone(tmp_path: Path) -> None:
    # Another application's file, in SQLite's default (rollback journal) mode.
    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as theirs:
        theirs.execute("CREATE TABLE things (x)")
    engine = build_engine(DatabaseSettings(url=f"sqlite:///{path}"), must_exist=True)

    with engine.connect() as connection:
        read = connection.execute(text("SELECT count(*) FROM things")).scalar_one()
    engine.dispose()

    with sqlite3.connect(path) as theirs:
        journal = theirs.execute("PRAGMA journal_mode").fetchone()[0]
    assert (read, journal) == (0, "delete")


def test_sqlite_can_wait_for_the_disk_at_each_commit(tmp_path: Path) -> None:
    settings = DatabaseSettings(url=f"sqlite:///{tmp_path / 'a.db'}", sqlite_synchronous="FULL")
    engine = build_engine(settings)

    with engine.connect() as connection:
        synchronous = connection.execute(text("PRAGMA synchronous")).scalar_one()

    assert synchronous == 2  # FULL
    engine.dispose()


def test_password_is_set_on_a_postgres_url_without_connecting() -> None:
    settings = DatabaseSettings(
        url="postgresql+psycopg://pipeline@db.invalid:5432/orders", password=SecretStr("s3cret")
    )

    engine = build_engine(settings)

    assert engine.url.password == "s3cret"
    assert engine.url.username == "pipeline"
    assert "s3cret" not in repr(engine.url)
    assert is_postgres(engine)


def test_a_password_setting_leaves_a_sqlite_url_as_it_is(tmp_path: Path) -> None:
    # One environment for all (the secure stack's sets the PostgreSQL password) and a SQLite
    # URL for one program: its driver refused the URL with the password in it.
    settings = DatabaseSettings(url=f"sqlite:///{tmp_path}/x.db", password=SecretStr("s3cret"))

    engine = build_engine(settings)

    assert engine.url.password is None
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar_one() == 1
    engine.dispose()


def test_url_without_a_password_setting_keeps_its_own() -> None:
    engine = build_engine(DatabaseSettings(url="postgresql+psycopg://u:inline@db.invalid/x"))

    assert engine.url.password == "inline"


def test_the_password_setting_wins_over_the_urls_with_one_warning_without_either(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A URL with another password connected with PIPELINE_DATABASE__PASSWORD's, unsaid.
    settings = DatabaseSettings(
        url="postgresql+psycopg://u:inline-pw@two-passwords.invalid/x",
        password=SecretStr("setting-pw"),
    )

    with caplog.at_level(logging.WARNING, logger="pipeline.database"):
        engines = [build_engine(settings), build_engine(settings)]  # one warning per process

    assert [engine.url.password for engine in engines] == ["setting-pw", "setting-pw"]
    [warning] = [r for r in caplog.records if r.name == "pipeline.database"]
    assert warning.levelname == "WARNING"
    assert warning.getMessage() == (
        "database.url postgresql+psycopg://u:***@two-passwords.invalid/x carries a password "
        "and PIPELINE_DATABASE__PASSWORD another: PIPELINE_DATABASE__PASSWORD is used; drop "
        "one of them"
    )


def test_the_same_password_in_the_url_and_the_setting_is_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = DatabaseSettings(
        url="postgresql+psycopg://u:same@same-password.invalid/x", password=SecretStr("same")
    )

    with caplog.at_level(logging.WARNING, logger="pipeline.database"):
        build_engine(settings)

    assert not [r for r in caplog.records if r.name == "pipeline.database"]


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "",
        "nosuchdb://host/db",  # no such dialect
        "postgresql+nosuchdriver://u@db.invalid/db",  # no such driver
    ],
)
def test_unusable_url_is_a_one_line_database_error(url: str) -> None:
    with pytest.raises(DatabaseError) as raised:
        build_engine(DatabaseSettings(url=url))

    assert "\n" not in str(raised.value)
    assert "database.url" in str(raised.value)


def test_unusable_url_error_hides_the_password() -> None:
    settings = DatabaseSettings(url="nosuchdb://u@host/db", password=SecretStr("s3cret"))

    with pytest.raises(DatabaseError) as raised:
        build_engine(settings)

    assert "s3cret" not in str(raised.value)


def test_unreachable_database_is_a_one_line_database_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "service.db"
    engine = build_engine(DatabaseSettings(url=f"sqlite:///{missing}"))

    with pytest.raises(DatabaseError, match="cannot use the database") as raised:
        migrate(engine)

    assert "\n" not in str(raised.value)


def test_fresh_database_has_no_revision(tmp_path: Path) -> None:
    assert current_revision(sqlite_engine(tmp_path)) is None


def test_migrate_brings_the_database_to_the_head_revision(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)

    migrate(engine)

    assert current_revision(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert {"pipeline_inbox", "pipeline_parked_keys", "pipeline_outbox"} <= tables
    engine.dispose()


def test_the_head_revision_the_code_names_is_alembics_head() -> None:
    # migrate() skips Alembic when the database is at HEAD_REVISION: a migration added without
    # moving the constant would never run on a database at the previous head.
    assert head_revision() == HEAD_REVISION


def test_a_database_at_an_older_revision_is_still_migrated(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    migrate(engine)
    with engine.begin() as connection:
        # What the downgrades of 0008 to 0004 leave: the database five revisions behind.
        connection.execute(text("UPDATE alembic_version SET version_num = '0003_sagas'"))
        connection.execute(text("ALTER TABLE pipeline_sagas DROP COLUMN namespace"))
        connection.execute(text("DROP INDEX ix_pipeline_sagas_next_resend"))
        connection.execute(text("ALTER TABLE pipeline_sagas DROP COLUMN next_resend"))
        connection.execute(text("ALTER TABLE pipeline_parked_keys DROP COLUMN last_event_id"))
        connection.execute(text("DROP INDEX ix_pipeline_saga_steps_handled_at"))
        connection.execute(text("DROP TABLE pipeline_gateway_idempotency"))
        connection.execute(text("DROP TABLE pipeline_gateway_keys"))

    migrate(engine)

    assert current_revision(engine) == HEAD_REVISION
    tables = set(inspect(engine).get_table_names())
    assert {"pipeline_gateway_idempotency", "pipeline_gateway_keys"} <= tables
    indexes = {index["name"] for index in inspect(engine).get_indexes("pipeline_saga_steps")}
    assert "ix_pipeline_saga_steps_handled_at" in indexes
    columns = {column["name"] for column in inspect(engine).get_columns("pipeline_parked_keys")}
    assert "last_event_id" in columns
    indexes = {index["name"] for index in inspect(engine).get_indexes("pipeline_sagas")}
    assert "ix_pipeline_sagas_next_resend" in indexes
    columns = {column["name"] for column in inspect(engine).get_columns("pipeline_sagas")}
    assert "namespace" in columns
    engine.dispose()


def _drop_0009(connection: Connection) -> None:
    """What the downgrade of 0009 leaves: the API keys without the secret before a rotation."""
    for column in ("rotated_at", "previous_until", "previous_secret_sha256"):
        connection.execute(text(f"ALTER TABLE pipeline_gateway_keys DROP COLUMN {column}"))


def test_keys_added_before_0009_are_kept_never_rotated(tmp_path: Path) -> None:
    # Additive: a key row of the version before is read as a key never rotated, and a gateway
    # of the version before (which names only the columns it knows) still reads the keys.
    engine = sqlite_engine(tmp_path)
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0008_sagas_namespace'"))
        _drop_0009(connection)
        connection.execute(
            text(
                "INSERT INTO pipeline_gateway_keys (name, key_id, secret_sha256, request_types, "
                "created_at) VALUES ('shop', '0123456789abcdef', 'digest', '[\"place_order\"]', "
                "'2026-01-01 00:00:00')"
            )
        )

    migrate(engine)

    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT name, previous_secret_sha256, previous_until, rotated_at "
                "FROM pipeline_gateway_keys"
            )
        ).one()
        old_gateways_read = connection.execute(
            text("SELECT name, key_id, secret_sha256, revoked_at FROM pipeline_gateway_keys")
        ).one()
    assert tuple(row) == ("shop", None, None, None)
    assert tuple(old_gateways_read) == ("shop", "0123456789abcdef", "digest", None)
    assert current_revision(engine) == "0009_gateway_keys_rotation"
    engine.dispose()


def test_sagas_saved_before_0007_get_their_next_deadline_as_their_next_resend(
    tmp_path: Path,
) -> None:
    engine = sqlite_engine(tmp_path)
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE alembic_version SET version_num = '0006_parked_keys_last_event'")
        )
        _drop_0009(connection)
        connection.execute(text("ALTER TABLE pipeline_sagas DROP COLUMN namespace"))
        connection.execute(text("DROP INDEX ix_pipeline_sagas_next_resend"))
        connection.execute(text("ALTER TABLE pipeline_sagas DROP COLUMN next_resend"))
        for saga_id, deadline in (("open", "'2026-01-01 00:00:00'"), ("ended", "NULL")):
            connection.execute(
                text(
                    "INSERT INTO pipeline_sagas (saga_id, name, version, status, state, "
                    "next_deadline, revision, created_at, updated_at) VALUES "
                    f"('{saga_id}', 's', 1, 'running', '{{}}', {deadline}, 1, "
                    "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )

    migrate(engine)

    with engine.connect() as connection:
        rows = dict(
            connection.execute(text("SELECT saga_id, next_resend FROM pipeline_sagas")).all()
        )
    assert rows == {"open": "2026-01-01 00:00:00", "ended": None}
    engine.dispose()


def test_sagas_saved_before_0008_get_the_namespace_their_state_names(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE alembic_version SET version_num = '0007_sagas_next_resend'")
        )
        _drop_0009(connection)
        connection.execute(text("ALTER TABLE pipeline_sagas DROP COLUMN namespace"))
        states = {
            "default": "{}",  # a saga of the default namespace names none
            "billing": '{"namespace": "billing-saga", "data": {"namespace": "x"}}',
            "data-only": '{"data": {"namespace": "x"}}',  # a field of its data is not it
        }
        for saga_id, state in states.items():
            connection.execute(
                text(
                    "INSERT INTO pipeline_sagas (saga_id, name, version, status, state, "
                    "revision, created_at, updated_at) VALUES "
                    f"('{saga_id}', 's', 1, 'running', :state, 1, "
                    "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {"state": state},
            )

    migrate(engine)

    with engine.connect() as connection:
        rows = dict(connection.execute(text("SELECT saga_id, namespace FROM pipeline_sagas")).all())
    assert rows == {"default": "saga", "billing": "billing-saga", "data-only": "saga"}
    engine.dispose()


def test_migrate_twice_changes_nothing(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO pipeline_inbox VALUES "
                "('g', 'e1', 't', 0, 0, 'processed', '2024-01-01 00:00:00')"
            )
        )

    migrate(engine)

    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT event_id FROM pipeline_inbox")).scalars().all()
    assert rows == ["e1"]
    engine.dispose()


def _migrate_file(path: str) -> str:
    """In a process of its own: migrate the SQLite file at ``path``; ``ok`` or the error."""
    engine = build_engine(DatabaseSettings(url=f"sqlite:///{path}"))
    try:
        migrate(engine)
    except Exception as error:  # reported to the test, which shows it
        return f"{type(error).__name__}: {error}"
    finally:
        engine.dispose()
    return "ok"


def test_programs_starting_at_once_on_a_new_sqlite_file_all_migrate_it(tmp_path: Path) -> None:
    """Several processes (a processor's instances, a relay) migrate one new SQLite file at the
    same moment: each starts, and the schema is migrated once."""
    import multiprocessing

    path = str(tmp_path / "shared.db")
    context = multiprocessing.get_context("spawn")
    with context.Pool(6) as pool:
        outcomes = pool.map(_migrate_file, [path] * 6)

    assert outcomes == ["ok"] * 6
    engine = build_engine(DatabaseSettings(url=f"sqlite:///{path}"))
    assert current_revision(engine) == HEAD_REVISION
    engine.dispose()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://app:s3cret@db/shop", "postgresql+psycopg://app:***@db/shop"),
        (
            "postgresql+psycopg://db/shop?user=app&password=s3cret&sslpassword=k3y",
            "postgresql+psycopg://db/shop?password=***&sslpassword=***&user=app",
        ),
        ("sqlite:///pipeline.db", "sqlite:///pipeline.db"),
    ],
)
def test_a_database_url_is_shown_without_any_password(url, shown):
    assert url_label(make_url(url)) == shown


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_a_postgresql_url_sqlalchemy_cannot_use_says_which_scheme_it_takes(scheme):
    # "Can't load plugin: sqlalchemy.dialects:postgres", and nothing about what would do.
    with pytest.raises(DatabaseError, match=r"postgresql\+psycopg://\)$"):
        build_engine(DatabaseSettings(url=f"{scheme}://me@db.example/shop"))


def test_a_database_error_for_a_log_line_has_the_drivers_words_not_the_rows_data():
    from sqlalchemy.exc import OperationalError

    from pipeline.database import error_text

    error = OperationalError(
        "INSERT INTO ledger (event_id, payload) VALUES (%(e)s, %(p)s)",
        {"e": "e-1", "p": '{"card": "4111 1111 1111 1111"}'},
        Exception("terminating connection due to administrator command\nSSL SYSCALL error"),
    )

    said = error_text(error)

    assert said == "terminating connection due to administrator command SSL SYSCALL error"
    assert "4111" not in said and "INSERT" not in said
    assert error_text(ValueError("x" * 500), most=10) == "x" * 10


def test_the_default_databases_folder_is_made_and_any_other_missing_one_is_an_error(
    tmp_path: Path,
) -> None:
    # A typo in PIPELINE_DATABASE__URL made its folder and an empty database: everything
    # handled before was handled again.
    home = tmp_path / "home"
    default = DatabaseSettings(url=default_database_url(home))
    create_sqlite_folder(default, home)
    assert home.is_dir()

    typo = DatabaseSettings(url=f"sqlite:///{tmp_path / 'nonexistent' / 'dir' / 'x.db'}")
    with pytest.raises(DatabaseError, match=r"nonexistent/dir of the SQLite database .* does not"):
        create_sqlite_folder(typo, home)
    assert not (tmp_path / "nonexistent").exists()

    existing = DatabaseSettings(url=f"sqlite:///{tmp_path / 'x.db'}")
    create_sqlite_folder(existing, home)  # its folder is there: nothing to do


def test_a_database_a_newer_version_migrated_is_one_line_naming_both_revisions(
    tmp_path: Path,
) -> None:
    # Alembic's traceback ("Can't locate revision identified by ...") for a rolled-back release.
    engine = build_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'newer.db'}"))
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099_future'"))

    with pytest.raises(DatabaseError) as refused:
        migrate(engine)

    message = str(refused.value)
    assert "is at schema revision 0099_future, which this version of the pipeline" in message
    assert f"(its newest is {HEAD_REVISION})" in message
    # Or another application's Alembic table: the message says both.
    assert "or another application's Alembic keeps its version there" in message


def test_another_applications_table_of_the_same_name_is_one_line(tmp_path: Path) -> None:
    engine = build_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'foreign.db'}"))
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE pipeline_outbox (id INTEGER PRIMARY KEY, body TEXT)"))

    with pytest.raises(DatabaseError, match="cannot create the pipeline's tables in") as refused:
        migrate(engine)

    assert "already exists" in str(refused.value)
    assert "another application's table of that name?" in str(refused.value)
    assert current_revision(engine) is None  # nothing of the migration was kept


def test_a_file_that_is_not_a_database_is_one_line_naming_it(tmp_path: Path) -> None:
    # sqlite3.DatabaseError, not an OperationalError: it was a traceback.
    path = tmp_path / "notdb.txt"
    path.write_text("hello\n")
    engine = build_engine(DatabaseSettings(url=f"sqlite:///{path}"))

    with pytest.raises(DatabaseError) as refused:
        migrate(engine)

    assert str(refused.value) == f"cannot use the database sqlite:///{path}: file is not a database"
    assert path.read_text() == "hello\n"


def test_a_password_with_an_at_sign_sqlalchemy_took_for_the_host_is_never_shown() -> None:
    url = "postgresql+psycopg://pipeline:Sec@ret99@127.0.0.1:5432/x"

    assert url_label(make_url(url)) == "postgresql+psycopg://pipeline:***@127.0.0.1:5432/x"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://pipeline:Sec@ret99@127.0.0.1:5432/x",
        "postgresql+psycopg://pipeline:Sec@ret99/more@127.0.0.1:5432/x",
        "postgresql+psycopg://pipeline:Sec@ret99?more@127.0.0.1:5432/x",
        "postgresql+psycopg://pipeline@127.0.0.1:5432/x?password=Sec@ret99",
    ],
)
def test_a_url_with_a_password_holding_an_at_sign_is_never_shown_even_unchecked(url: str) -> None:
    # Unchecked (the settings refuse such a URL): the helpers still show none of it.
    unchecked = DatabaseSettings.model_construct(url=url, password=None)
    assert "ret99" not in database_label(unchecked)
    with pytest.raises(DatabaseError, match=r"\(@ as %40") as refused:
        build_engine(unchecked)
    assert "ret99" not in str(refused.value) and "Sec" not in str(refused.value)


READ_ONLY = "(the database is read-only: a replica, or read-only by default? the pipeline needs"
NAME_TAKEN = "(another application's table of that name?"


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        # default_transaction_read_only, a hot standby: "cannot execute CREATE TABLE in a
        # read-only transaction" was blamed on another application's table.
        ("ReadOnlySqlTransaction", READ_ONLY),
        ("DuplicateTable", NAME_TAKEN),
        ("UndefinedColumn", NAME_TAKEN),
        ("InsufficientPrivilege", None),
        ("sqlite3:attempt to write a readonly database", READ_ONLY),
        ("sqlite3:no such column: x", NAME_TAKEN),
        ("sqlite3:disk I/O error", None),
    ],
)
def test_a_migration_failure_gets_the_hint_its_error_suggests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str, hint: str | None
) -> None:
    import sqlite3

    import psycopg
    import psycopg.errors
    from alembic import command
    from sqlalchemy.exc import DBAPIError

    said = "what PostgreSQL said"
    if error.startswith("sqlite3:"):
        said = error.removeprefix("sqlite3:")
        orig: Exception = sqlite3.OperationalError(said)
        dbapi: type[Exception] = sqlite3.Error
    else:
        orig, dbapi = getattr(psycopg.errors, error)(said), psycopg.Error

    def fails(*_: object, **__: object) -> None:
        raise DBAPIError.instance("CREATE TABLE t (x int)", {}, orig, dbapi)

    monkeypatch.setattr(command, "upgrade", fails)
    engine = build_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'x.db'}"))

    with pytest.raises(DatabaseError) as refused:
        migrate(engine)

    message = str(refused.value)
    assert message.startswith("cannot create the pipeline's tables in sqlite:///")
    if hint is None:
        assert message.endswith(f": {said}")
    else:
        assert f": {said} {hint}" in message
        assert message.count("(") == 1  # one hint, never both


def test_a_migration_says_from_which_revision_to_which(tmp_path: Path, caplog) -> None:
    # An operator rolling out a version could not tell from any log which program migrated.
    engine = sqlite_engine(tmp_path)
    with caplog.at_level(logging.INFO, logger="pipeline.database"):
        migrate(engine)
        migrate(engine)  # at the head already: nothing said

    said = [r.getMessage() for r in caplog.records if "schema migrated" in r.getMessage()]
    assert said == [
        f"database {url_label(engine.url)}: schema migrated from nothing (a new database) "
        f"to {HEAD_REVISION}"
    ]

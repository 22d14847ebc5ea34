import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from pipeline.settings import StackSettings
from pipeline.stack import postgres_node
from pipeline.stack.preflight import StackError


def _server_dir(bin_dir: Path) -> Path:
    bin_dir.mkdir(parents=True)
    for name in ("postgres", "initdb"):
        program = bin_dir / name
        program.write_text("#!/bin/sh\n")
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_the_newest_debian_server_is_found_by_version_not_by_name(tmp_path):
    for version in ("9.6", "15", "16", "100"):
        _server_dir(tmp_path / version / "bin")
    (tmp_path / "17" / "bin").mkdir(parents=True)  # client only: no server programs
    assert postgres_node.find_bin_dir(debian_root=tmp_path) == tmp_path / "100" / "bin"


def test_pg_config_bindir_wins_when_it_holds_the_server(tmp_path):
    debian = _server_dir(tmp_path / "debian" / "16" / "bin").parent.parent
    own = _server_dir(tmp_path / "own" / "bin")
    assert postgres_node.find_bin_dir(None, own, debian) == own


def test_a_pg_config_bindir_without_the_server_falls_back_to_debian(tmp_path):
    # libpq-dev's pg_config says /usr/bin, where Debian keeps no postgres.
    debian = _server_dir(tmp_path / "debian" / "15" / "bin").parent.parent
    client_only = tmp_path / "usr-bin"
    client_only.mkdir()
    assert postgres_node.find_bin_dir(None, client_only, debian) == debian / "15" / "bin"


def test_no_server_says_what_to_install(tmp_path):
    with pytest.raises(StackError) as raised:
        postgres_node.find_bin_dir(None, None, tmp_path / "missing")
    assert str(raised.value) == ("PostgreSQL server not found: install Debian's postgresql package")


def test_a_configured_folder_without_the_server_is_an_error_naming_it_and_its_setting(tmp_path):
    with pytest.raises(StackError) as raised:
        postgres_node.find_bin_dir(tmp_path, None, tmp_path)
    said = str(raised.value)
    assert f"PostgreSQL server not found in {tmp_path}, the folder " in said
    assert "PIPELINE_STACK__POSTGRES_BIN_DIR" in said


def test_the_version_is_read_from_postgres_version_output():
    output = "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"
    assert postgres_node.parse_version(output) == "15.18"
    assert postgres_node.major("15.18") == "15"
    assert postgres_node.major("9.6.24") == "9.6"
    with pytest.raises(StackError):
        postgres_node.parse_version("no digits here")


def _conf(text: str) -> dict[str, str]:
    pairs = [line.split(" = ", 1) for line in text.splitlines() if not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_the_config_listens_on_loopback_only_and_stays_durable():
    conf = _conf(postgres_node.postgresql_conf(15432, Path("/home/state/postgres/run")))
    assert conf["listen_addresses"] == "'127.0.0.1'"
    assert conf["port"] == "15432"
    assert conf["unix_socket_directories"] == "'/home/state/postgres/run'"
    assert conf["max_connections"] == "200"
    assert conf["shared_buffers"] == "'128MB'"
    assert conf["password_encryption"] == "'scram-sha-256'"
    # The chaos tests kill -9 the server and expect every committed row back.
    assert conf["fsync"] == "on"
    assert conf["synchronous_commit"] == "on"


def test_passwords_are_required_over_tcp_and_only_the_socket_knows_the_superuser():
    rules = [
        line.split()
        for line in postgres_node.pg_hba_conf().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules == [
        ["local", "all", "postgres", "peer", "map=pipeline"],
        ["local", "all", "all", "scram-sha-256"],
        ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"],
    ]
    ident = postgres_node.pg_ident_conf(["pipeline-pg", "root", "root"])
    assert ident.splitlines()[1:] == ["pipeline  pipeline-pg  postgres", "pipeline  root  postgres"]


def test_the_include_line_is_appended_once():
    once = postgres_node.with_include("max_connections = 100")
    assert once == "max_connections = 100\ninclude_if_exists = 'pipeline.conf'\n"
    assert postgres_node.with_include(once) == once


def test_bootstrap_sql_quotes_names_and_the_password():
    sql = postgres_node.bootstrap_sql("app", "it's", 'my"db')
    assert sql.splitlines() == [
        "CREATE ROLE \"app\" LOGIN CREATEDB PASSWORD 'it''s';",
        'CREATE DATABASE "my""db" OWNER "app";',
    ]


def test_commands_run_as_the_dedicated_user_through_setpriv_which_keeps_the_pid():
    server = postgres_node.server_command(Path("/pg/bin"), Path("/data"))
    assert server == ["/pg/bin/postgres", "-D", "/data"]
    assert postgres_node.as_user(server, None) == server
    wrapped = postgres_node.as_user(server, "pipeline-pg", "pg")
    assert wrapped[0] == "setpriv"
    assert "--reuid=pipeline-pg" in wrapped and "--regid=pg" in wrapped
    assert wrapped[-3:] == server
    initdb = postgres_node.initdb_command(Path("/pg/bin"), Path("/data"))
    assert initdb[0] == "/pg/bin/initdb"
    assert "--pgdata=/data" in initdb and "--auth-host=scram-sha-256" in initdb


def test_run_as_user_only_when_root():
    expected = "pipeline-pg" if os.geteuid() == 0 else None
    assert postgres_node.run_as_user("pipeline-pg") == expected


def test_the_database_url_keeps_the_password_apart_unless_asked():
    stack = StackSettings(postgres_port=15432, postgres_password=SecretStr("p@ss:word"))
    assert postgres_node.database_url(stack) == (
        "postgresql+psycopg://pipeline@127.0.0.1:15432/pipeline"
    )
    assert postgres_node.database_url(stack, "other", with_password=True) == (
        "postgresql+psycopg://pipeline:p%40ss%3Aword@127.0.0.1:15432/other"
    )
    database = postgres_node.database_settings(stack)
    assert database.url == "postgresql+psycopg://pipeline@127.0.0.1:15432/pipeline"
    assert database.password is not None
    assert database.password.get_secret_value() == "p@ss:word"


def test_stack_settings_default_to_the_documented_postgres(clean_pipeline_environment):
    stack = StackSettings()
    assert stack.postgres_port == 5432
    assert stack.postgres_user == "pipeline-pg"
    assert (stack.postgres_role, stack.postgres_database) == ("pipeline", "pipeline")
    assert stack.postgres_password.get_secret_value() == "pipeline"


class RecordingConnection:
    """Stands in for a psycopg connection: records the statements it is given."""

    def __init__(self, statements: list[str]) -> None:
        self.statements = statements

    def __enter__(self) -> "RecordingConnection":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.statements.append("<closed>")

    def execute(self, statement, params=None):
        self.statements.append(statement if isinstance(statement, str) else statement.as_string())


@pytest.fixture
def connects(monkeypatch):
    """psycopg.connect replaced: each call's keyword arguments, and every statement run."""
    import psycopg

    calls: list[dict[str, object]] = []
    statements: list[str] = []

    def connect(**kwargs):
        calls.append(kwargs)
        return RecordingConnection(statements)

    monkeypatch.setattr(psycopg, "connect", connect)
    return calls, statements


def test_the_admin_connection_is_the_stack_role_on_its_database_in_autocommit(connects):
    calls, _ = connects
    stack = StackSettings(postgres_port=15432, postgres_password=SecretStr("secret"))

    postgres_node.admin_connection(stack, connect_timeout_s=3, application_name="tests")

    assert calls == [
        {
            "host": "127.0.0.1",
            "port": 15432,
            "user": "pipeline",
            "password": "secret",
            "dbname": "pipeline",
            "autocommit": True,
            "connect_timeout": 3,
            "application_name": "tests",
        }
    ]


def test_scratch_databases_are_created_for_the_role_and_dropped_by_force(connects):
    calls, statements = connects
    stack = StackSettings(postgres_password=SecretStr("secret"))

    postgres_node.create_database(stack, "test_one")
    postgres_node.drop_database(stack, "test_one")

    assert statements == [
        'CREATE DATABASE "test_one" OWNER "pipeline"',
        "<closed>",
        'DROP DATABASE IF EXISTS "test_one" WITH (FORCE)',
        "<closed>",
    ]
    assert all(call["autocommit"] is True for call in calls)


class _RefusingAdmin:
    """An admin connection whose DROP DATABASE is refused ``refusals`` times, as PostgreSQL
    refuses it while an autovacuum worker (no role) is busy on the database."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.drops = 0

    def __call__(self, _stack: StackSettings):
        import contextlib

        from psycopg import errors

        admin = self

        class Connection:
            def execute(self, _statement: object) -> None:
                admin.drops += 1
                if admin.refusals:
                    admin.refusals -= 1
                    raise errors.InsufficientPrivilege(
                        "must be a member of the role whose process is being terminated or "
                        "member of pg_signal_backend"
                    )

        return contextlib.nullcontext(Connection())


def test_drop_database_tries_again_while_an_autovacuum_worker_holds_it(monkeypatch):
    admin = _RefusingAdmin(refusals=2)
    monkeypatch.setattr(postgres_node, "admin_connection", admin)
    monkeypatch.setattr(postgres_node.time, "sleep", lambda _s: None)

    postgres_node.drop_database(StackSettings(), "test_db", wait_s=30)

    assert admin.drops == 3


def test_drop_database_gives_up_after_its_wait(monkeypatch):
    from psycopg import errors

    admin = _RefusingAdmin(refusals=10**6)
    monkeypatch.setattr(postgres_node, "admin_connection", admin)

    with pytest.raises(errors.InsufficientPrivilege):
        postgres_node.drop_database(StackSettings(), "test_db", wait_s=0.5)
    assert admin.drops > 1


def test_a_cluster_interrupted_while_being_made_is_removed(tmp_path):
    # Ctrl-C after initdb and before the role existed: every later start took the cluster as
    # made (PG_VERSION) and waited out its timeout on a role that did not exist.
    data = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt), postgres_node.cluster_removed_unless_made(data):
        data.mkdir()
        (data / "PG_VERSION").write_text("15\n")
        raise KeyboardInterrupt

    assert not data.exists()
    with postgres_node.cluster_removed_unless_made(data):
        data.mkdir()
    assert data.exists()  # made: kept

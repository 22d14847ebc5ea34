"""A PostgreSQL cluster for development from Debian's packages: discovery, config, commands.

The cluster lives in ``<home>/state/postgres/data`` and belongs to a dedicated system user when
we are root (postgres refuses to run as root). The first start works in this order:

1. ``initdb`` (UTF-8, no locale, superuser ``postgres`` reachable only over the unix socket by
   peer authentication);
2. our settings into ``pipeline.conf`` (included from ``postgresql.conf``), ``pg_hba.conf``
   and ``pg_ident.conf``, rewritten on every start so a changed port takes effect;
3. the role and its database, once, in single-user mode (no server, no password on a command
   line);
4. ``postgres -D <data>`` in the background, checked by a real connection of that role.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from pipeline.settings import DatabaseSettings, StackSettings
from pipeline.stack import processes
from pipeline.stack.health import Health
from pipeline.stack.preflight import StackError, port_answers

if TYPE_CHECKING:
    import psycopg

HOST = "127.0.0.1"
SUPERUSER = "postgres"
DEBIAN_ROOT = Path("/usr/lib/postgresql")
NOT_FOUND = "PostgreSQL server not found: install Debian's postgresql package"
_INCLUDE = "include_if_exists = 'pipeline.conf'"


# ---- finding the server ------------------------------------------------------------------


def is_server_dir(path: Path) -> bool:
    """Whether ``path`` holds the server programs (``pg_config --bindir`` of libpq-dev does not)."""
    return all(os.access(path / name, os.X_OK) for name in ("postgres", "initdb"))


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.name)) or (-1,)


def find_bin_dir(
    configured: Path | None = None,
    pg_config_bindir: Path | None = None,
    debian_root: Path = DEBIAN_ROOT,
) -> Path:
    """The folder with ``postgres`` and ``initdb``.

    In order: the configured folder (an error if it is not one), ``pg_config --bindir``, the
    newest ``<debian_root>/<version>/bin``.
    """
    if configured is not None:
        if not is_server_dir(configured):
            raise StackError(
                f"PostgreSQL server not found in {configured}, the folder "
                "PIPELINE_STACK__POSTGRES_BIN_DIR names (no postgres and initdb there): point it "
                "at the server's bin folder, or unset it to find Debian's postgresql package"
            )
        return configured
    if pg_config_bindir is not None and is_server_dir(pg_config_bindir):
        return pg_config_bindir
    candidates = sorted(
        (folder / "bin" for folder in _children(debian_root) if is_server_dir(folder / "bin")),
        key=lambda bin_dir: _version_key(bin_dir.parent),
    )
    if not candidates:
        raise StackError(NOT_FOUND)
    return candidates[-1]


def _children(folder: Path) -> list[Path]:
    try:
        return [child for child in folder.iterdir() if child.is_dir()]
    except OSError:
        return []


def pg_config_bindir() -> Path | None:
    """``pg_config --bindir`` when pg_config is on PATH and answers."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    output = result.stdout.strip()
    return Path(output) if result.returncode == 0 and output else None


def parse_version(version_output: str) -> str:
    """``postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`` -> ``15.18``."""
    match = re.search(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)?)", version_output) or re.search(
        r"(\d+(?:\.\d+)?)", version_output
    )
    if match is None:
        raise StackError(f"cannot read the PostgreSQL version from: {version_output.strip()!r}")
    return match.group(1)


def server_version(bin_dir: Path) -> str:
    result = subprocess.run(
        [str(bin_dir / "postgres"), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return parse_version(result.stdout + result.stderr)


def major(version: str) -> str:
    """``15.18`` -> ``15``; ``9.6.24`` -> ``9.6`` (the number in ``PG_VERSION``)."""
    parts = version.split(".")
    return ".".join(parts[:2]) if parts[0] == "9" else parts[0]


# ---- who runs it ---------------------------------------------------------------------------


def run_as_user(configured_user: str) -> str | None:
    """The dedicated user to run PostgreSQL as, when we are root (it refuses root)."""
    return configured_user if os.geteuid() == 0 else None


def as_user(command: list[str], user: str | None, group: str | None = None) -> list[str]:
    """``command`` run as ``user`` through ``setpriv``, which execs (the pid stays postgres's).

    Not ``runuser``: it stays the parent, and on SIGTERM kills its child after two seconds,
    which would turn every shutdown into a crash recovery.
    """
    if user is None:
        return command
    return [
        "setpriv",
        f"--reuid={user}",
        f"--regid={group or user}",
        "--init-groups",
        "--",
        *command,
    ]


# ---- configuration -------------------------------------------------------------------------


def postgresql_conf(port: int, socket_dir: Path) -> str:
    """Our settings, included from the ``postgresql.conf`` initdb wrote; durable (fsync on)."""
    settings = {
        "listen_addresses": f"'{HOST}'",
        "port": str(port),
        "unix_socket_directories": f"'{socket_dir}'",
        "max_connections": "200",
        "shared_buffers": "'128MB'",
        "password_encryption": "'scram-sha-256'",
        # Durability stays as on a server: the chaos tests kill -9 and expect every commit.
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
        # Logs go to stderr, which the stack appends to postgres.log.
        "logging_collector": "off",
        "log_destination": "'stderr'",
        "log_line_prefix": "'%m [%p] %q%u@%d '",
        "log_timezone": "'UTC'",
        "timezone": "'UTC'",
    }
    lines = ["# Written by `pipeline stack up` on every start; edits are overwritten."]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def pg_hba_conf() -> str:
    """Passwords (SCRAM) over TCP on 127.0.0.1; the superuser only by peer on the socket."""
    return (
        "# Written by `pipeline stack up` on every start; edits are overwritten.\n"
        "# TYPE  DATABASE  USER      ADDRESS       METHOD\n"
        f"local   all       {SUPERUSER:<9} peer map=pipeline\n"
        "local   all       all                     scram-sha-256\n"
        "host    all       all       127.0.0.1/32  scram-sha-256\n"
    )


def secure_postgresql_conf(port: int, socket_dir: Path, certificate: Path, key: Path) -> str:
    """:func:`postgresql_conf` with TLS on (the secure stack): the server's certificate and key
    (owned by the server's user, 0600), TLS 1.2 at least."""
    settings = {
        "ssl": "on",
        "ssl_cert_file": f"'{certificate}'",
        "ssl_key_file": f"'{key}'",
        "ssl_min_protocol_version": "'TLSv1.2'",
    }
    lines = [f"{key_} = {value}" for key_, value in settings.items()]
    return postgresql_conf(port, socket_dir) + "\n".join(lines) + "\n"


def secure_pg_hba_conf() -> str:
    """:func:`pg_hba_conf` for the secure stack: over TCP only with TLS (``hostssl``) and a
    SCRAM password; a client without TLS finds no entry and is refused."""
    return (
        "# Written by `pipeline stack up --secure` on every start; edits are overwritten.\n"
        "# TYPE  DATABASE  USER      ADDRESS       METHOD\n"
        f"local   all       {SUPERUSER:<9} peer map=pipeline\n"
        "local   all       all                     scram-sha-256\n"
        "hostssl all       all       127.0.0.1/32  scram-sha-256\n"
    )


def pg_ident_conf(os_users: list[str]) -> str:
    """Which system users may sign in as the superuser over the socket."""
    lines = ["# MAPNAME  SYSTEM-USERNAME  PG-USERNAME"]
    lines += [f"pipeline  {user}  {SUPERUSER}" for user in dict.fromkeys(os_users)]
    return "\n".join(lines) + "\n"


def with_include(postgresql_conf_text: str) -> str:
    """initdb's ``postgresql.conf`` with our include line appended once."""
    if _INCLUDE in postgresql_conf_text.splitlines():
        return postgresql_conf_text
    separator = "" if postgresql_conf_text.endswith("\n") or not postgresql_conf_text else "\n"
    return f"{postgresql_conf_text}{separator}{_INCLUDE}\n"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def bootstrap_sql(role: str, password: str, database: str) -> str:
    """The role and its database; one statement per line (single-user mode runs each line)."""
    return (
        f"CREATE ROLE {_identifier(role)} LOGIN CREATEDB PASSWORD {_literal(password)};\n"
        f"CREATE DATABASE {_identifier(database)} OWNER {_identifier(role)};\n"
    )


# ---- commands ------------------------------------------------------------------------------


def initdb_command(bin_dir: Path, data_dir: Path) -> list[str]:
    return [
        str(bin_dir / "initdb"),
        f"--pgdata={data_dir}",
        f"--username={SUPERUSER}",
        "--encoding=UTF8",
        "--no-locale",
        "--auth-local=peer",
        "--auth-host=scram-sha-256",
    ]


def single_user_command(bin_dir: Path, data_dir: Path) -> list[str]:
    return [str(bin_dir / "postgres"), "--single", "-D", str(data_dir), SUPERUSER]


def server_command(bin_dir: Path, data_dir: Path) -> list[str]:
    return [str(bin_dir / "postgres"), "-D", str(data_dir)]


# ---- URLs ----------------------------------------------------------------------------------


def database_url(
    stack: StackSettings, database: str | None = None, *, with_password: bool = False
) -> str:
    """The SQLAlchemy URL of the stack's database (``postgresql+psycopg://pipeline@...``).

    Without the password unless asked: it belongs in ``DatabaseSettings.password``.
    """
    credentials = stack.postgres_role
    if with_password:
        from urllib.parse import quote

        password = stack.postgres_password.get_secret_value()
        credentials = f"{quote(stack.postgres_role, safe='')}:{quote(password, safe='')}"
    name = database or stack.postgres_database
    return f"postgresql+psycopg://{credentials}@{HOST}:{stack.postgres_port}/{name}"


def database_settings(stack: StackSettings) -> DatabaseSettings:
    """``DatabaseSettings`` pointing at the stack's database, the password kept apart."""
    return DatabaseSettings(url=database_url(stack), password=stack.postgres_password)


# ---- admin connections and scratch databases -------------------------------------------------


def admin_connection(
    stack: StackSettings,
    *,
    connect_timeout_s: int = 10,
    application_name: str = "pipeline-admin",
) -> psycopg.Connection[Any]:
    """A psycopg connection to the stack's database as the stack's role; close it after use.

    In autocommit mode, as ``CREATE DATABASE`` and ``DROP DATABASE`` cannot run inside a
    transaction. Use it as ``with admin_connection(stack) as connection: ...``.
    """
    import psycopg

    return psycopg.connect(
        host=HOST,
        port=stack.postgres_port,
        user=stack.postgres_role,
        password=stack.postgres_password.get_secret_value(),
        dbname=stack.postgres_database,
        autocommit=True,
        connect_timeout=connect_timeout_s,
        application_name=application_name,
    )


def create_database(stack: StackSettings, name: str) -> None:
    """Create database ``name`` on the stack's server, owned by the stack's role."""
    from psycopg import sql

    with admin_connection(stack) as connection:
        connection.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(stack.postgres_role)
            )
        )


#: How long :func:`drop_database` waits, at most, for an autovacuum worker on the database.
DROP_AUTOVACUUM_WAIT_S = 30.0


def drop_database(
    stack: StackSettings, name: str, *, wait_s: float = DROP_AUTOVACUUM_WAIT_S
) -> None:
    """Drop database ``name`` if it exists, ending any session still connected to it.

    ``WITH (FORCE)`` ends the sessions of the stack's role, but an autovacuum worker busy on
    the database (after many writes) belongs to no role, and only a superuser may end it:
    PostgreSQL refuses the drop with InsufficientPrivilege ("must be a member of the role whose
    process is being terminated"). The worker is done in moments, so the drop is tried again
    for up to ``wait_s``.
    """
    from psycopg import errors, sql

    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with admin_connection(stack) as connection:
                connection.execute(statement)
            return
        except errors.InsufficientPrivilege:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


# ---- health and stop -----------------------------------------------------------------------


def postgres_health(stack: StackSettings, timeout_s: float = 5.0) -> Health:
    """A real connection of the stack's role running ``select version()``."""
    import psycopg

    address = f"{HOST}:{stack.postgres_port}"
    if not port_answers(HOST, stack.postgres_port):
        return Health("postgres", address, ok=False, detail="nothing listens there")
    try:
        with admin_connection(
            stack,
            connect_timeout_s=max(2, int(timeout_s)),
            application_name="pipeline-stack-health",
        ) as connection:
            row = connection.execute(
                "select version(), current_setting('server_version')"
            ).fetchone()
    except psycopg.Error as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        # A refused login is an answer: say so, rather than "does not answer".
        refused = "authentication failed" in first_line or "does not exist" in first_line
        detail = (
            f"PostgreSQL refused the login: {first_line}"
            if refused
            else f"the port is open but PostgreSQL does not answer: {first_line}"
        )
        return Health("postgres", address, ok=False, port_open=True, detail=detail)
    assert row is not None
    server, short = str(row[0]).split(" on ")[0], str(row[1])
    return Health(
        "postgres",
        address,
        ok=True,
        port_open=True,
        version=short.split()[0],
        detail=f"database {stack.postgres_database} as {stack.postgres_role}: {server}",
    )


def stop_fast(record: processes.ProcessRecord, timeout_s: float = 30.0) -> bool:
    """Fast shutdown (SIGINT to the postmaster: sessions end, a checkpoint is written).

    SIGTERM would be a *smart* shutdown that waits for every client; anything still running
    after ``timeout_s`` is stopped the generic way. Returns whether anything was running.
    """
    process = processes.find(record)
    if process is None:
        return False
    with contextlib.suppress(psutil.NoSuchProcess):
        process.send_signal(signal.SIGINT)
    with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
        process.wait(timeout=timeout_s)
    processes.stop(record)
    return True


@contextlib.contextmanager
def cluster_removed_unless_made(data: Path) -> Iterator[None]:
    """Remove the cluster folder ``data`` unless the block completes: a first start that
    failed, or was interrupted (Ctrl-C) after initdb and before the role existed, left a
    cluster every later start took as made (``PG_VERSION``), waiting out its timeout on a
    role that does not exist."""
    try:
        yield
    except BaseException:
        shutil.rmtree(data, ignore_errors=True)
        raise

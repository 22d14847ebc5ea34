"""PostgreSQL as a component of the local stack, and the ``postgres_url`` fixture."""

import contextlib
import socket
import threading

import psutil
import psycopg
import pytest
from sqlalchemy import create_engine, text

from pipeline.settings import PipelineSettings
from pipeline.stack.postgres_node import database_url
from tests.support.stack_cli import run_pipeline


def _processes_under(home: str) -> list[int]:
    return [
        p.pid for p in psutil.process_iter(["cmdline"]) if home in " ".join(p.info["cmdline"] or [])
    ]


def test_up_only_postgres_starts_just_it_status_shows_its_version_and_down_stops_it(
    isolated_stack_env, monkeypatch
):
    home = isolated_stack_env["PIPELINE_STACK__HOME"]
    port = isolated_stack_env["PIPELINE_STACK__POSTGRES_PORT"]
    up = run_pipeline("stack", "up", "--only", "postgres", env=isolated_stack_env)
    assert up.returncode == 0, up.stderr
    assert "started postgres in" in up.stderr

    status = run_pipeline("stack", "status", env=isolated_stack_env)
    assert status.returncode == 1  # Kafka and Elasticsearch of this stack were not started
    rows = [line.split("│") for line in status.stdout.splitlines() if line.startswith("│")]
    [row] = [cells for cells in rows if cells[1].strip() == "postgres"]
    cells = [cell.strip() for cell in row]
    assert cells[1:5] == ["postgres", f"127.0.0.1:{port}", "up", cells[4]]
    assert cells[4].split(".")[0].isdigit(), cells
    assert cells[5].startswith("pid ")

    for name, value in isolated_stack_env.items():
        monkeypatch.setenv(name, value)
    url = database_url(PipelineSettings().stack, with_password=True)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                text("select current_user, current_database(), current_setting('fsync')")
            ).one()
    finally:
        engine.dispose()
    assert tuple(row) == ("pipeline", "pipeline", "on")

    logs = run_pipeline("stack", "logs", "postgres", "-n", "20", env=isolated_stack_env)
    assert logs.returncode == 0
    assert "database system is ready to accept connections" in logs.stdout

    again = run_pipeline("stack", "up", "--only", "postgres", env=isolated_stack_env)
    assert again.returncode == 0, again.stderr
    assert "started nothing (already answering)" in again.stderr

    # Our own server, which this run cannot log in to: refused, and left running.
    wrong = {**isolated_stack_env, "PIPELINE_STACK__POSTGRES_PASSWORD": "not-the-password"}
    refused = run_pipeline("stack", "up", "--only", "postgres", env=wrong)
    assert refused.returncode == 2
    assert f"port {port} is taken by something that is not a healthy PostgreSQL" in refused.stderr
    still = run_pipeline("stack", "up", "--only", "postgres", env=isolated_stack_env)
    assert "started nothing (already answering)" in still.stderr, still.stderr

    down = run_pipeline("stack", "down", env=isolated_stack_env)
    assert down.returncode == 0, down.stderr
    assert "stopped postgres" in down.stderr
    assert _processes_under(home) == []
    assert "received fast shutdown request" in (
        run_pipeline("stack", "logs", "postgres", "-n", "50", env=isolated_stack_env).stdout
    )


def test_a_postgres_port_taken_by_something_else_is_a_one_line_error(isolated_stack_env):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    stop = threading.Event()

    def accept_and_stay_silent():
        listener.settimeout(0.2)
        connections = []
        while not stop.is_set():
            with contextlib.suppress(OSError):
                connections.append(listener.accept()[0])
        for connection in connections:
            connection.close()

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    try:
        env = {**isolated_stack_env, "PIPELINE_STACK__POSTGRES_PORT": str(port)}
        result = run_pipeline("stack", "up", "--only", "postgres", env=env)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert result.returncode == 2
    assert f"port {port} is taken by something that is not a healthy PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bin_dir_without_the_server_names_it_and_its_setting(isolated_stack_env, tmp_path):
    env = {**isolated_stack_env, "PIPELINE_STACK__POSTGRES_BIN_DIR": str(tmp_path)}
    result = run_pipeline("stack", "up", "--only", "postgres", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        f"error: PostgreSQL server not found in {tmp_path}, the folder "
        "PIPELINE_STACK__POSTGRES_BIN_DIR names"
    )
    assert "Debian's postgresql package" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_shared_stack_postgres_answers_with_its_version(postgres_stack, pipeline_settings):
    assert postgres_stack.postgres.ok, postgres_stack.postgres.detail
    assert postgres_stack.postgres.version is not None
    assert postgres_stack.postgres.address == f"127.0.0.1:{pipeline_settings.stack.postgres_port}"


_databases_made: list[str] = []
_lingering: list[psycopg.Connection] = []


def test_postgres_url_is_a_fresh_database_owned_by_the_pipeline_role(
    postgres_url, pipeline_settings
):
    port = pipeline_settings.stack.postgres_port
    assert postgres_url.startswith(f"postgresql+psycopg://pipeline:pipeline@127.0.0.1:{port}/")
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            connection.execute(text("create table orders (id text primary key, amount numeric)"))
            connection.execute(text("insert into orders values ('order-1', 12.50)"))
            connection.commit()
            assert connection.execute(text("select amount from orders")).scalar_one() == 12.5
            name, owner = connection.execute(
                text(
                    "select d.datname, pg_get_userbyid(d.datdba) from pg_database d "
                    "where d.datname = current_database()"
                )
            ).one()
    finally:
        engine.dispose()
    assert owner == "pipeline"
    assert postgres_url.endswith(f"/{name}")
    _databases_made.append(name)
    # Left open on purpose: the fixture must end it to drop the database.
    _lingering.append(psycopg.connect(postgres_url.replace("+psycopg", "", 1)))


def test_postgres_url_databases_are_dropped_after_their_test(postgres_stack, pipeline_settings):
    if not _databases_made:
        pytest.skip("runs after test_postgres_url_is_a_fresh_database_owned_by_the_pipeline_role")
    stack = pipeline_settings.stack
    with psycopg.connect(
        host="127.0.0.1",
        port=stack.postgres_port,
        user=stack.postgres_role,
        password=stack.postgres_password.get_secret_value(),
        dbname=stack.postgres_database,
    ) as connection:
        left = connection.execute(
            "select datname from pg_database where datname = any(%s)", (_databases_made,)
        ).fetchall()
    assert left == []
    for lingering in _lingering:
        with pytest.raises(psycopg.OperationalError):  # terminated before the drop
            lingering.execute("select 1")
        lingering.close()


def test_two_postgres_url_databases_in_one_run_are_distinct(postgres_url, request):
    other = request.getfixturevalue("postgres_url")  # same fixture instance within a test
    assert other == postgres_url
    assert postgres_url.rsplit("/", 1)[1].startswith("test_test_two_postgres_url_databases")

"""``pipeline gateway keys add | list | revoke``: the gateway's API keys.

``add`` prints the new key once, alone on stdout (its last line), so a script can take it:
``KEY=$(pipeline gateway keys add shop --types place_order)``; only its digest is stored, so it
cannot be shown again. ``list`` shows names, key ids, request types and dates, never a key or a
digest. ``revoke`` takes effect on running gateways within ``gateway.key_refresh_s``. SQLAlchemy
and the key table are imported by the commands: ``pipeline --help`` needs only their signatures.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from pipeline.cli.checks import utf8_text
from pipeline.cli.console import stderr_console, stdout_console
from pipeline.cli.process import announce_database
from pipeline.errors import PipelineError
from pipeline.request_types import REQUEST_TYPES
from pipeline.settings import PipelineSettings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

app = typer.Typer(
    help="The gateway's API keys: add (prints the key once), list, revoke.", no_args_is_help=True
)


def _settings(ctx: typer.Context) -> PipelineSettings:
    settings = ctx.obj
    assert isinstance(settings, PipelineSettings), "read once by the `pipeline` entry point"
    return settings


#: PostgreSQL's SQLSTATE of a statement naming a table the database lacks.
_UNDEFINED_TABLE = "42P01"


@contextmanager
def _database(ctx: typer.Context, *, must_exist: bool = False) -> Iterator[Engine]:
    """The database of the API keys: migrated by ``add`` (the keys' table is created by the first
    command that needs it).

    ``must_exist``: for ``list`` and ``revoke``, which have nothing to do in a database no
    program wrote to: a SQLite file that is not there is one line (a mistyped URL made an empty
    database, and ``list`` said the gateway was open), and one that is there is neither created
    nor migrated (it may be another application's), as ``saga list`` and ``outbox status``."""
    from sqlalchemy.exc import DBAPIError

    from pipeline.database import build_engine, create_sqlite_folder, migrate, url_label

    settings = _settings(ctx)
    announce_database(settings)
    if not must_exist:
        create_sqlite_folder(settings.database, settings.stack.home)
    engine = build_engine(settings.database, pool_size=1, must_exist=must_exist)
    where = url_label(engine.url)
    try:
        if not must_exist:
            migrate(engine)
        yield engine
    except DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        sqlstate = getattr(error.orig, "sqlstate", None)
        if sqlstate == _UNDEFINED_TABLE or reason.startswith("no such table"):
            raise PipelineError(
                f"no API keys in {where}: no gateway has used this database yet "
                "(`pipeline gateway keys add` adds the first)"
            ) from None
        raise PipelineError(f"cannot use the API keys in {where}: {reason}") from None
    finally:
        engine.dispose()


def _request_types(types: str) -> list[str]:
    names = [name.strip() for name in types.split(",") if name.strip()]
    known = sorted(REQUEST_TYPES)
    unknown = [name for name in names if name not in REQUEST_TYPES]
    if not names or unknown:
        got = f"unknown request type {unknown[0]!r}" if unknown else "no request type"
        raise typer.BadParameter(f"{got}; known: {', '.join(known)}", param_hint="--types")
    return names


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def key_name(name: str) -> str:
    """An API key's name as ``keys add`` takes it (``keys revoke`` too: no other can exist)."""
    from producers.gateway.keys import name_problem

    utf8_text(name)
    problem = name_problem(name)
    if problem is not None:
        raise typer.BadParameter(problem)
    return name


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(help="The key's name: the client, in logs and limits.", callback=key_name),
    ],
    types: Annotated[
        str,
        typer.Option(
            "--types",
            metavar="TYPE,...",
            help=f"Request types the key may send, comma-separated ({', '.join(REQUEST_TYPES)}).",
        ),
    ],
) -> None:
    """Add an API key and print it, once: only its digest is kept."""
    from producers.gateway.key_table import add_key

    allowed = _request_types(types)
    with _database(ctx) as engine:
        key = add_key(engine, name, allowed)
    stderr_console().print(
        f"API key {name!r} added, allowed: {', '.join(sorted(set(allowed)))}. It is printed "
        "below, this once: keep it now (send it as 'Authorization: Bearer <key>').",
        highlight=False,
    )
    typer.echo(key)


@app.command("list")
def list_keys(ctx: typer.Context) -> None:
    """List the API keys (never the keys themselves): name, key id, types, dates."""
    from producers.gateway.key_table import load_keys

    with _database(ctx, must_exist=True) as engine:
        keys = load_keys(engine)
    if not keys:
        stderr_console().print(
            "no API key: the gateway is open (add one with `pipeline gateway keys add`)",
            highlight=False,
        )
        return
    table = Table(title="gateway API keys")
    for column in ("name", "key id", "request types", "created", "revoked"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            key.name,
            key.key_id,
            ", ".join(sorted(key.request_types)),
            _when(key.created_at),
            _when(key.revoked_at),
        )
    stdout_console().print(table)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name.", callback=key_name)],
) -> None:
    """Revoke an API key: running gateways refuse it within gateway.key_refresh_s (5 s)."""
    from producers.gateway.key_table import revoke_key

    settings = _settings(ctx)
    with _database(ctx, must_exist=True) as engine:
        revoke_key(engine, name)
    refresh_s = settings.gateway.key_refresh_s
    stderr_console().print(
        f"API key {name!r} revoked: running gateways refuse it within {refresh_s:g} s",
        highlight=False,
    )

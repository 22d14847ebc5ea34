"""``pipeline gateway keys add | list | revoke | rotate``: the gateway's API keys.

``add`` prints the new key once, alone on stdout (its last line), so a script can take it:
``KEY=$(pipeline gateway keys add shop --types place_order)``; only its digest is stored, so it
cannot be shown again. ``list`` shows names, key ids, request types and dates (and until when
the secret before a rotation is still accepted), never a key or a digest. ``revoke`` takes
effect on running gateways within their ``gateway.key_refresh_s``. ``rotate`` prints a new key
for the same name, as ``add`` does, and the key before it stays valid for ``--keep-old-for``.
SQLAlchemy and the key table are imported by the commands: ``pipeline --help`` needs only
their signatures.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from pipeline.cli.checks import utf8_text
from pipeline.cli.console import stderr_console, stdout_console
from pipeline.cli.process import announce_database, announce_migration
from pipeline.errors import PipelineError
from pipeline.request_types import REQUEST_TYPES
from pipeline.settings import GatewaySettings, PipelineSettings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

app = typer.Typer(
    help="The gateway's API keys: add (prints the key once), list, revoke, rotate.",
    no_args_is_help=True,
)


def _settings(ctx: typer.Context) -> PipelineSettings:
    settings = ctx.obj
    assert isinstance(settings, PipelineSettings), "read once by the `pipeline` entry point"
    return settings


#: PostgreSQL's SQLSTATE of a statement naming a table (a column) the database lacks.
_UNDEFINED_TABLE = "42P01"
_UNDEFINED_COLUMN = "42703"


@contextmanager
def _database(ctx: typer.Context, *, must_exist: bool = False) -> Iterator[Engine]:
    """The database of the API keys: migrated by ``add`` (the keys' table is created by the first
    command that needs it).

    ``must_exist``: for ``list``, ``revoke`` and ``rotate``, which have nothing to do in a
    database no program wrote to: a SQLite file that is not there is one line (a mistyped URL
    made an empty database, and ``list`` said the gateway was open), and one that is there is
    neither created nor migrated (it may be another application's), as ``saga list`` and
    ``outbox status``; one whose keys' table predates this version says to migrate it."""
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
            announce_migration(migrate(engine))
        yield engine
    except DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        sqlstate = getattr(error.orig, "sqlstate", None)
        if sqlstate == _UNDEFINED_TABLE or reason.startswith("no such table"):
            raise PipelineError(
                f"no API keys in {where}: no gateway has used this database yet "
                "(`pipeline gateway keys add` adds the first)"
            ) from None
        if sqlstate == _UNDEFINED_COLUMN or reason.startswith("no such column"):
            raise PipelineError(
                f"the API keys' table in {where} is older than this version of the pipeline "
                f"({reason}): migrate it (`pipeline db migrate`, or start `pipeline gateway` of "
                "this version), then run this again"
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


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(?:\d{1,7}[smhd])+")
#: The longest grace period a rotation may give the key before it (a rotation that leaves the
#: old secret valid for months is no rotation).
MAX_KEEP_OLD_FOR = timedelta(days=30)


def keep_old_for(text: str) -> timedelta:
    """``--keep-old-for``: ``0``, or a duration such as ``90s``, ``30m``, ``24h``, ``7d``,
    ``1h30m``; at most :data:`MAX_KEEP_OLD_FOR`."""
    value = text.strip().lower()
    if value == "0":
        return timedelta(0)
    if _DURATION.fullmatch(value) is None:
        raise typer.BadParameter(
            f"{text[:40]!r}: expected 0 or a duration such as 90s, 30m, 24h, 7d, 1h30m",
            param_hint="--keep-old-for",
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in re.findall(r"(\d+)([smhd])", value))
    if seconds > MAX_KEEP_OLD_FOR.total_seconds():
        raise typer.BadParameter(
            f"{text[:40]!r} is longer than {MAX_KEEP_OLD_FOR.days} days: a rotation's grace "
            "period is for clients to switch",
            param_hint="--keep-old-for",
        )
    return timedelta(seconds=seconds)


def _refresh_defaults(*, stale: bool = True) -> str:
    """How soon running gateways take a change of the keys, by their settings' defaults
    (theirs may differ from this command's); ``stale``: and what one that cannot read the
    database does."""
    fields = GatewaySettings.model_fields
    when = f"within their PIPELINE_GATEWAY__KEY_REFRESH_S ({fields['key_refresh_s'].default:g} s"
    if not stale:
        return f"{when} by default)"
    return (
        f"{when} by default; one that cannot read the database refuses every key past its "
        f"PIPELINE_GATEWAY__KEYS_MAX_STALE_S, {fields['keys_max_stale_s'].default:g} s by default)"
    )


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
    """Add an API key and print it, once: only its digest is kept.

    The key is the last line on stdout, alone (what else is said goes to stderr), so that a
    script can take it. The database is created and migrated if need be.

    Examples:
      pipeline gateway keys add shop --types place_order,cancel_order
      KEY=$(pipeline gateway keys add crm --types register_customer)
    """
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
    """List the API keys (never the keys themselves): name, key id, types, dates.

    Only reads: a database no gateway has used is an error, neither created nor migrated.

    Examples:
      pipeline gateway keys list
      PIPELINE_DATABASE__URL=postgresql+psycopg://app@db.internal/orders pipeline gateway keys list
    """
    from producers.gateway.key_table import load_keys

    with _database(ctx, must_exist=True) as engine:
        keys = load_keys(engine)
    if not keys:
        stderr_console().print(
            "no API key: the gateway is open (add one with `pipeline gateway keys add`)",
            highlight=False,
        )
        return
    now = datetime.now(UTC)
    table = Table(title="gateway API keys")
    for column in ("name", "key id", "request types", "created", "rotated", "old key valid until"):
        table.add_column(column)
    table.add_column("revoked")
    for key in keys:
        still = not key.revoked and key.previous_valid(now)
        table.add_row(
            key.name,
            key.key_id,
            ", ".join(sorted(key.request_types)),
            _when(key.created_at),
            _when(key.rotated_at),
            _when(key.previous_until) if still else "-",
            _when(key.revoked_at),
        )
    stdout_console().print(table)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name.", callback=key_name)],
) -> None:
    """Revoke an API key: running gateways refuse it within their gateway.key_refresh_s.

    Its key before a rotation, still valid for --keep-old-for, is refused too.

    Examples:
      pipeline gateway keys revoke shop
    """
    from producers.gateway.key_table import revoke_key

    with _database(ctx, must_exist=True) as engine:
        revoke_key(engine, name)
    stderr_console().print(
        f"API key {name!r} revoked (its key before a rotation too): running gateways refuse it "
        f"{_refresh_defaults()}",
        highlight=False,
    )


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name.", callback=key_name)],
    keep_old: Annotated[
        str,
        typer.Option(
            "--keep-old-for",
            metavar="DURATION",
            help="How long the key before stays valid beside the new one: 0 (refused at once), "
            f"or e.g. 90s, 30m, 24h, 7d; at most {MAX_KEEP_OLD_FOR.days}d.",
        ),
    ] = "24h",
) -> None:
    """Give an API key a new secret and print the new key, once; the name (the client: its
    rate limit, Idempotency-Key scope and request types) stays.

    The new key is the last line on stdout, alone, as with add; the key before it stays valid
    for --keep-old-for (24h), while its clients switch.

    Examples:
      pipeline gateway keys rotate shop
      pipeline gateway keys rotate shop --keep-old-for 7d
      pipeline gateway keys rotate shop --keep-old-for 0   # a leaked key: refused at once
    """
    from producers.gateway.key_table import rotate_key

    grace = keep_old_for(keep_old)
    with _database(ctx, must_exist=True) as engine:
        rotated = rotate_key(engine, name, grace)
    refresh = _refresh_defaults(stale=False)
    if rotated.previous_until is None:
        done = (
            f"running gateways take the new key, and refuse the one before it, {refresh}: "
            "no grace period"
        )
    else:
        done = (
            f"running gateways take the new key {refresh}, and the one before it stays valid "
            f"for {keep_old.strip().lower()}, until {_when(rotated.previous_until)}: switch "
            "its clients meanwhile"
        )
    cut = (
        ""
        if rotated.cut_short is None
        else f" The key before the last rotation (valid until {_when(rotated.cut_short)}) is "
        "refused from now on: only one key before is kept."
    )
    stderr_console().print(
        f"API key {name!r} rotated: {done}.{cut} The new key is printed below, this once: keep "
        "it now (send it as 'Authorization: Bearer <key>').",
        highlight=False,
    )
    typer.echo(rotated.key)

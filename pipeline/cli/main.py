"""The ``pipeline`` command: one Typer application with a sub-command per concern.

Settings are read once here and handed to the sub-commands through the Typer context.
Every expected failure is a :class:`pipeline.errors.PipelineError`, printed as one line with a
non-zero exit code; a traceback means a bug.

Each sub-command's module is imported only when that command is asked for
(:class:`pipeline.cli.lazy.LazyGroup`): ``pipeline process`` imports ``pipeline.cli.process`` and
no other command's module; ``pipeline --help``, which lists every command's one-line help, imports
them all. The command modules in turn import what their commands use (Kafka, SQLAlchemy,
Elasticsearch, aiohttp, Faust) inside the commands: Typer needs only their signatures, so no help
page loads any of it (tests/unit/pipeline/cli/test_main.py holds them to both).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.markup import escape
from typer import _click
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from pipeline.cli.console import SAID_LOGGER, standard_streams, stderr_console
from pipeline.cli.lazy import LazyGroup
from pipeline.default_database import default_database_url
from pipeline.errors import PipelineError
from pipeline.logs.record import error_type
from pipeline.logs.redact import is_secret_name, redact
from pipeline.logs.setup import json_console
from pipeline.settings import PipelineSettings, complex_setting_variables, misspelled_settings


class PipelineCommands(LazyGroup):
    """The sub-commands of ``pipeline``, each imported when it is asked for."""

    lazy_commands = {
        "demo": "pipeline.cli.demo:demo",
        "produce": "pipeline.cli.produce:produce",
        "consume": "pipeline.cli.consume:consume",
        "process": "pipeline.cli.process:process",
        "record": "pipeline.cli.record:record",
        "replay": "pipeline.cli.replay:replay",
        "stack": "pipeline.cli.stack:app",
        "topics": "pipeline.cli.topics:app",
        "outbox": "pipeline.cli.outbox:app",
        "db": "pipeline.cli.db:app",
        "dashboards": "pipeline.cli.dashboards:app",
        "logs": "pipeline.cli.logs:app",
        "dlq": "pipeline.cli.dlq:app",
        "saga": "pipeline.cli.saga:app",
        "gateway": "pipeline.cli.gateway:app",
    }

    # Click shows a usage error as the usage, a hint and a boxed message; ours is one line (as
    # every other error), naming the command's help. Parsing the top level happens in
    # make_context, a sub-command's (and its callbacks' checks) within invoke.
    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: _click.Context | None = None,
        **extra: Any,
    ) -> _click.Context:
        with _one_line_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: _click.Context) -> Any:
        # The sub-command's words, for an error that names no command (below).
        words = [*ctx._protected_args, *ctx.args]
        with _one_line_errors(lambda: _command_path(self, ctx, words)):
            return super().invoke(ctx)


def _command_path(group: _click.Command, ctx: _click.Context, words: list[str]) -> str:
    """The path of the command that ``words`` name below ``group`` (``pipeline saga list``):
    the sub-command names up to the first option or argument."""
    path = [ctx.command_path]
    command: _click.Command = group
    for word in words:
        found = (
            command.get_command(ctx, word)
            if isinstance(command, TyperGroup) and not word.startswith("-")
            else None
        )
        if found is None:
            break
        path.append(word)
        command = found
    return " ".join(path)


@contextmanager
def _one_line_errors(command_path: Callable[[], str] | None = None) -> Iterator[None]:
    """Click's usage errors as one line naming the command's help. Typer's own Click leaves
    some without their command (a missing option value, found while parsing a sub-command's
    words): ``command_path`` names it then."""
    try:
        yield
    except NoArgsIsHelpError:
        raise  # a group given no sub-command: its help, as asked
    except ClickException as error:
        message = " ".join(error.format_message().split())  # Click lists choices on lines
        # Typer checks a value with pydantic, whose label of a check's own message ("Value
        # error, ") is not the user's: "Invalid value for '--only': 'x' is not one of ...".
        message = message.replace("': Value error, ", "': ", 1)
        context = error.ctx if isinstance(error, UsageError) else None
        path = context.command_path if context is not None else None
        if path is None and isinstance(error, UsageError) and command_path is not None:
            path = command_path()
        if path is not None:
            message = f"{message.removesuffix('.')} (see {path} -h)"
        _stderr.print(f"[red]error:[/red] {escape(redact(cut(message)))}", highlight=False)
        raise typer.Exit(error.exit_code) from None


app = typer.Typer(
    name="pipeline",
    help="Event-streaming pipeline on Apache Kafka and Elasticsearch.",
    cls=PipelineCommands,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # -h as well as --help, on every command (sub-commands inherit it).
    context_settings={"help_option_names": ["-h", "--help"]},
)

_stderr = stderr_console()


#: The distribution this command belongs to (pyproject.toml's project name).
DISTRIBUTION = "event-pipeline"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"pipeline {metadata.version(DISTRIBUTION)}")
        raise typer.Exit()


@app.callback()
def _load_settings(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Event-streaming pipeline on Apache Kafka and Elasticsearch.

    Configuration comes from PIPELINE_* environment variables (nested with __), e.g.
    PIPELINE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092. The database is
    PIPELINE_DATABASE__URL, by default the SQLite file pipeline.db in the
    stack's home (PIPELINE_STACK__HOME); programs that use it say which.
    """
    try:
        settings = read_settings()
    except PipelineError:
        # A command's help needs no settings: it is shown whatever they hold. (The command
        # line as typed: Click hands this callback none of the sub-command's arguments.)
        if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
            return
        raise
    ctx.obj = with_default_database(settings)


def read_settings() -> PipelineSettings:
    """The settings from the environment; a setting that does not read is a one-line
    :class:`PipelineError` naming it."""
    _refuse_an_env_file_not_utf8()
    misspelled = misspelled_settings(_variables_given())
    if misspelled:
        variable, meant = sorted(misspelled.items())[0]
        raise PipelineError(f"{variable} is not a setting: did you mean {meant}?")
    try:
        return PipelineSettings()
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        # "Value error, ..." is pydantic's label of a check's own message: not the user's.
        problem = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing" and len(first["loc"]) > 1:
            problem += _section_turned_on(first["loc"][:-1])
        if where and is_secret_name(str(first["loc"][-1])):
            # "api_key: an API key ...": the line's redaction would take "an" for the key.
            raise PipelineError(f"invalid setting {where} ({problem})") from None
        raise PipelineError(f"invalid setting {where}: {problem}" if where else problem) from None
    except SettingsError as error:  # a PIPELINE_* value that is not the JSON a list/map needs
        raise PipelineError(f"invalid setting: {_not_json(str(error)) or error}") from None


def _section_turned_on(section: tuple[Any, ...]) -> str:
    """For a field missing in an optional section (``gateway.jwt``): the variables of that
    section that were set, which turned it on (setting one, say the leeway, needs the rest)."""
    prefix = "PIPELINE_" + "__".join(str(part).upper() for part in section) + "__"
    named = sorted(name for name in _variables_given() if name.upper().startswith(prefix))
    if not named:
        return ""
    return f" ({', '.join(named)} set, which turns {'.'.join(map(str, section))} on)"


def _refuse_an_env_file_not_utf8() -> None:
    """A :class:`PipelineError` naming the first line of the ``.env`` file that is not UTF-8
    (python-dotenv and pydantic-settings read it as UTF-8, and failed with a traceback)."""
    from pathlib import Path

    env_file = Path(".env")
    if not env_file.is_file():
        return
    for number, line in enumerate(env_file.read_bytes().splitlines(), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise PipelineError(
                f".env is not UTF-8 (line {number} has the byte 0x{line[error.start]:02x}): "
                "save it as UTF-8"
            ) from None


def _variables_given() -> set[str]:
    """The names of the environment's variables and of the ``.env`` file's (which
    pydantic-settings reads too)."""
    return set(_values_given())


def _values_given() -> dict[str, str | None]:
    """The environment's variables and the ``.env`` file's, the environment's winning (as in
    pydantic-settings)."""
    import os
    from pathlib import Path

    from dotenv import dotenv_values

    values: dict[str, str | None] = {}
    env_file = Path(".env")
    if env_file.is_file():
        values.update(dotenv_values(env_file))
    values.update(os.environ)
    return values


def _not_json(message: str) -> str | None:
    """Which ``PIPELINE_*`` variable is not the JSON its list or map needs (pydantic-settings
    names only the section, ``field "gateway"``): one that looks like JSON and does not parse,
    with the parser's reason, or else the section's variables that do not parse. Only the
    variables that take JSON are looked at: any other may be a password starting with ``{``,
    and is neither blamed nor quoted (the parser's reason quotes no value)."""
    import json
    import re

    takes_json = complex_setting_variables()
    given = _values_given()
    variables = sorted(name for name in given if name.upper() in takes_json)
    wrong = []
    for name in variables:
        value = given[name]
        if value is None:  # a line of .env without "="
            continue
        try:
            json.loads(value)
        except ValueError as error:
            if value.lstrip().startswith(("[", "{")):
                return f"{name} is not valid JSON ({error})"
            wrong.append(name)
    section = re.search(r'field "(\w+)"', message)
    if section is None:
        return None
    section_variable = f"PIPELINE_{section.group(1).upper()}"
    named = [
        name
        for name in wrong
        if name.upper() == section_variable or name.upper().startswith(f"{section_variable}__")
    ]
    if not named:
        return None
    return (
        f"{' or '.join(named)}: a list or map setting takes JSON, e.g. "
        '\'["10.0.0.0/8"]\' or \'{"name": "value"}\''
    )


def with_default_database(settings: PipelineSettings) -> PipelineSettings:
    """``settings`` whose database, unless one is configured, is the default one: the SQLite
    file in the stack's home, the same whatever the current folder."""
    if "url" in settings.database.model_fields_set:
        return settings
    database = settings.database.model_copy(
        update={"url": default_database_url(settings.stack.home)}
    )
    return settings.model_copy(update={"database": database})


def run() -> None:
    """Console entry point: expected errors become one line on stderr and exit code 2.

    Typer's standalone mode already answers usage errors that way and exits by itself. A
    closed stdin reads as empty; stdout that refuses what is printed (a full disk, closed) is
    ``error: cannot write to stdout: ...``, and a reader of stdout that went away (``| head``)
    ends the command with exit code 0 (:func:`pipeline.cli.console.standard_streams`).
    """
    try:
        with standard_streams():
            app()
    except PipelineError as error:
        _fail(str(error), error)
    # Bad input no command checked first, still a line and not a traceback: a file the user may
    # not read or write, a number too large for what it is given to.
    except PermissionError as error:
        _fail(f"{error.strerror}: {error.filename}" if error.filename else str(error), error)
    except OverflowError as error:
        _fail(f"a number is out of range: {error}", error)
    # Any other file the system refused (a name too long, a file where a folder was meant):
    # its name and the system's reason.
    except OSError as error:
        if error.filename is None:
            raise
        _fail(f"{error.filename}: {error.strerror or error}", error)


#: The exit code of an expected failure.
EXIT_FAILED = 2


#: An error line's most characters: past it, the middle of what it quotes is left out.
ERROR_LINE_CHARACTERS = 1_000


def cut(message: str) -> str:
    """``message`` as an error line shows it: whole, or its first and last few hundred
    characters around how many were left out (a 100 kB value given as an argument and quoted
    back made a 100 kB line; a check of each argument of its own missed some)."""
    if len(message) <= ERROR_LINE_CHARACTERS:
        return message
    head = tail = ERROR_LINE_CHARACTERS // 2 - 40
    left_out = len(message) - head - tail
    return f"{message[:head]}... ({left_out:,} characters left out) ...{message[-tail:]}"


def _fail(message: str, error: BaseException) -> NoReturn:
    message = cut(message)
    if json_console():
        # A program that logs ECS JSON to stderr: its last line is one too (level error, the
        # error's type and message, the exit code), and goes to the logs topic with the
        # others. The Kafka handler's close at exit sends it, waiting
        # PIPELINE_LOGS__FLUSH_TIMEOUT_S at most (Kafka may be what failed). Redacted as
        # every record is.
        said = {"error_type": error_type(type(error)), "error_message": message}
        logging.getLogger(SAID_LOGGER).error(message, extra={**said, "exit_code": EXIT_FAILED})
        sys.exit(EXIT_FAILED)
    # Escaped: the text is not markup ("[[topic]]" was swallowed). Redacted: whatever an error
    # quotes (a URL given with its password, a password= parameter) is not shown.
    _stderr.print(f"[red]error:[/red] {escape(redact(message))}", highlight=False)
    sys.exit(EXIT_FAILED)

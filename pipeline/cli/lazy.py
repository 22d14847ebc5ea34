"""A command group that imports each sub-command's module only when that command is asked for.

This is Click's documented pattern ("Lazily Loading Subcommands"): the group knows each
sub-command's name and where it is defined; ``list_commands`` returns the names and
``get_command`` imports the module the first time its command is wanted. So
``pipeline process`` imports ``pipeline.cli.process`` and none of the other command modules,
while ``pipeline --help``, which shows every command's one-line help, imports them all.

A sub-command is either a Typer application (a group such as ``pipeline outbox``), built as
``app.add_typer`` would, or a function (a command such as ``pipeline process``), built as
``app.command()`` would; both get the help of :mod:`pipeline.cli.help`.

Typer 0.2x vendors its own Click (``typer._click``); its context, command and usage-error types
have no public name, so this module takes them from there.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Mapping
from difflib import get_close_matches
from typing import Any, ClassVar

import typer
import typer.main
from typer import _click
from typer._click.exceptions import UsageError

from pipeline.cli.held_interrupts import interrupts_held
from pipeline.cli.help import PlainGroup, plain_help


def load_command(name: str, location: str) -> _click.Command:
    """The Click command ``name`` made from what ``location`` (``"module:attribute"``) names:
    a Typer application becomes a group, a function a command."""
    target = pkgutil.resolve_name(location)
    if isinstance(target, typer.Typer):
        plain_help(target)
        # get_group, not get_command: always a group (as add_typer makes it), and without the
        # shell-completion options get_command adds for an application of its own.
        group = typer.main.get_group(target)
        group.name = name
        return group
    single = typer.Typer(add_completion=False)
    single.command(name=name)(target)
    plain_help(single)
    return typer.main.get_command(single)


class LazyGroup(PlainGroup):
    """A group whose sub-commands in :attr:`lazy_commands` are imported on first use.

    Subclass it with the table of commands and pass the subclass as the application's ``cls``.
    """

    #: Each sub-command's name and where it is defined (``"module:attribute"``), in the order
    #: the group's help lists them.
    lazy_commands: ClassVar[Mapping[str, str]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._loaded: dict[str, _click.Command] = {}

    def list_commands(self, ctx: _click.Context) -> list[str]:
        registered = [name for name in super().list_commands(ctx) if name not in self.lazy_commands]
        return [*registered, *self.lazy_commands]

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        location = self.lazy_commands.get(cmd_name)
        if location is None:
            return super().get_command(ctx, cmd_name)
        if cmd_name not in self._loaded:
            with interrupts_held():  # its module's models are built as it is imported
                self._loaded[cmd_name] = load_command(cmd_name, location)
        return self._loaded[cmd_name]

    def resolve_command(
        self, ctx: _click.Context, args: list[str]
    ) -> tuple[str | None, _click.Command | None, list[str]]:
        """As Typer's, with its "Did you mean ...?" drawn from every command's name: Typer's
        draws from the commands already built (``self.commands``), none in a lazy group."""
        try:
            return super().resolve_command(ctx, args)
        except UsageError as error:
            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if self.suggest_commands and matches and "Did you mean" not in error.message:
                suggestions = ", ".join(f"{match!r}" for match in matches)
                error.message = f"{error.message.rstrip('.')}. Did you mean {suggestions}?"
            raise

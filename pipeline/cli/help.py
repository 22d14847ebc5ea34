"""Help pages without type labels: ``--follow`` rather than ``--follow <bool>``.

Typer (0.2x) prints each parameter's Python type in angle brackets (``<bool>``, ``<str>``,
``<int range>``). Here a flag shows no label, an option or argument shows its metavar when it
has one (``TOPIC``, ``N``), else its choices or its name in capitals, as Click does.
:func:`plain_help` applies this to every command and sub-command of an application, in one place.

The prose of a help text is reflowed (:func:`reflowed`): Typer keeps a docstring's line breaks,
so its source's wrapping showed as lines broken mid-sentence in the terminal (and in the list of
commands).

Typer 0.2x vendors its own Click (``typer._click``); its context and parameter types are private,
so they appear here as ``Any``.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


def _label(param: TyperOption) -> str:
    return param.metavar or (param.name or "").upper()


class PlainOption(TyperOption):
    """An option whose help shows its metavar (or name), its choices (``table|ndjson``), or
    nothing for a flag."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        if self.metavar is None and self.type_descriptor.is_choice:
            return (super().display_type_rich(ctx) or "").strip("<>")
        return _label(self)


class PlainArgument(TyperArgument):
    """An argument whose help shows no type label next to its name."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _plain(params: list[Any]) -> list[Any]:
    for param in params:
        # Only the help rendering differs, so re-classing the parameter Typer built is safe.
        if isinstance(param, TyperOption) and not isinstance(param, PlainOption):
            param.__class__ = PlainOption
        elif isinstance(param, TyperArgument) and not isinstance(param, PlainArgument):
            param.__class__ = PlainArgument
    return params


#: A line that starts an item of its own: indented (an example) or a list item.
_ITEM_LINE = re.compile(r"\s|[-*•] ")
#: In a paragraph headed by a line that ends with ``:`` ("Exit codes:"), numbered items too.
_LISTED_LINE = re.compile(r"\s|[-*•] |\d+\.? ")


def reflowed(text: str | None) -> str | None:
    """``text`` (a docstring) with each paragraph's lines joined, so that the terminal wraps
    them: lines that start an item keep their break (:data:`_ITEM_LINE`, and
    :data:`_LISTED_LINE` under a heading line), as does a line after one that ends with ``:``;
    a paragraph that starts with Click's ``\\b`` is kept as written."""
    if not text:
        return text
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        if paragraph.startswith("\b"):
            paragraphs.append(paragraph)
            continue
        lines: list[str] = []
        for line in paragraph.split("\n"):
            item = _LISTED_LINE if lines and lines[0].endswith(":") else _ITEM_LINE
            if lines and not item.match(line) and not lines[-1].endswith(":"):
                lines[-1] = f"{lines[-1]} {line.strip()}"
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


class PlainCommand(TyperCommand):
    """A command whose help shows no type labels, its prose reflowed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["help"] = reflowed(kwargs.get("help"))
        super().__init__(*args, **kwargs)

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain(super().get_params(ctx))


class PlainGroup(TyperGroup):
    """A group whose help shows no type labels, its prose reflowed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["help"] = reflowed(kwargs.get("help"))
        super().__init__(*args, **kwargs)

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain(super().get_params(ctx))


def _folding_parameter_help() -> None:
    """Have a parameter's help fold a word longer than its column instead of cutting it short:
    at 80 columns a setting's name (``PIPELINE_PROCESSING__MAX_IN_FLIGHT``) showed as
    ``PIPELINE_PROCESSING__MAX…``. Typer builds that help in ``rich_utils._get_parameter_help``
    (a private function, so this does nothing where it is not there) as rich ``Text`` items
    in a ``Columns``; the table cell holding it cuts with an ellipsis unless a text says
    otherwise."""
    from rich.text import Text
    from typer import rich_utils

    build = getattr(rich_utils, "_get_parameter_help", None)
    if build is None or getattr(build, "folds", False):
        return

    def folding(*args: Any, **kwargs: Any) -> Any:
        built = build(*args, **kwargs)
        for item in getattr(built, "renderables", ()):
            if isinstance(item, Text):
                item.overflow = "fold"
        return built

    folding.folds = True  # type: ignore[attr-defined]
    rich_utils._get_parameter_help = folding


def plain_help(app: typer.Typer) -> None:
    """Give every command and group of ``app`` (recursively) help without type labels.

    Call it once every command is registered; a class of the application's own is left alone.
    """
    _folding_parameter_help()
    if app.info.cls in (None, TyperGroup) or not isinstance(app.info.cls, type):
        app.info.cls = PlainGroup
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand):
            command.cls = PlainCommand
    for group in app.registered_groups:
        if group.typer_instance is not None:
            plain_help(group.typer_instance)

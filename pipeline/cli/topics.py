"""``pipeline topics``: apply the topic catalogue, list what exists."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.cli.console import announcing_kafka, stderr_console, stdout_console
from pipeline.plurals import counted
from pipeline.settings import PipelineSettings

if TYPE_CHECKING:
    from pipeline.topics.plan import ActualTopic, Plan
    from pipeline.topics.spec import Catalogue

app = typer.Typer(help="Create and update Kafka topics from the catalogue.", no_args_is_help=True)

CatalogueOption = Annotated[
    Path | None,
    typer.Option(
        "--catalogue",
        help="A TOML file of \\[\\[topic]] tables to use instead of the built-in catalogue "
        "(fields: name, partitions, replication_factor, retention_ms, cleanup_policy, "
        "configs, description).",
        dir_okay=False,
    ),
]
ReplicationOption = Annotated[
    int | None,
    typer.Option(
        "--replication-factor",
        min=1,
        max=32767,  # Kafka's (an int16): TopicSpec's bound, checked before the catalogue is built
        help="Replication factor of the built-in catalogue's topics (default 1, for a single "
        "broker). Not used with --catalogue, whose file says it per topic.",
    ),
]


def _settings(ctx: typer.Context) -> PipelineSettings:
    settings = ctx.obj
    assert isinstance(settings, PipelineSettings), "read once by the `pipeline` entry point"
    return settings


def _catalogue(path: Path | None, replication_factor: int | None) -> Catalogue:
    from pipeline.topics.catalogue import default_catalogue, load_catalogue_file

    if path is None:
        return default_catalogue(replication_factor or 1)
    if replication_factor is not None:
        raise typer.BadParameter(
            "the catalogue file sets replication_factor per topic",
            param_hint="--replication-factor",
        )
    return load_catalogue_file(path)


def _console() -> Console:
    return stdout_console()


def _retention(retention_ms: str | None) -> str:
    from pipeline.topics.spec import DAY_MS

    if retention_ms is None or not retention_ms.lstrip("-").isdigit():
        return retention_ms or "?"
    value = int(retention_ms)
    if value < 0:
        return "forever"
    if value % DAY_MS == 0:
        return f"{value // DAY_MS}d"
    if value % 3_600_000 == 0:
        return f"{value // 3_600_000}h"
    return f"{value}ms"


def _add_name_column(table: Table, names: list[str]) -> None:
    # Topic names are never folded (they are copied into other commands); other columns give way.
    width = max((len(name) for name in names), default=5)
    table.add_column("topic", no_wrap=True, min_width=width)


def _plan_table(plan: Plan) -> Table:
    table = Table(title="Topic changes", title_justify="left")
    _add_name_column(table, [change.topic for change in plan.changes])
    table.add_column("change", overflow="fold")
    for change in plan.changes:
        table.add_row(change.topic, change.describe())
    return table


def _print_warnings(plan: Plan) -> None:
    """What apply leaves alone (fewer partitions, another replication factor), on stderr:
    stdout is the plan's (a script reading the table got the warnings among it)."""
    err = stderr_console()
    for warning in plan.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(f'topic {warning.topic} {warning.problem}')}")


def _print_differences(console: Console, plan: Plan) -> None:
    """How each topic marked ``differs`` differs: one line per difference, under the table."""
    from pipeline.topics.plan import CreateTopic

    # A topic's differences together (changes, then what apply leaves: each warning says why).
    differences = sorted(
        [(c.topic, c.describe()) for c in plan.changes if not isinstance(c, CreateTopic)]
        + [(warning.topic, warning.problem) for warning in plan.warnings],
        key=lambda difference: difference[0],
    )
    if not differences:
        return
    count = len({topic for topic, _ in differences})
    verb = "differs" if count == 1 else "differ"
    console.print(
        f"{counted(count, 'topic')} {verb} from the catalogue"
        " (`pipeline topics apply` changes what it can):"
    )
    for topic, difference in differences:
        # One line each, never folded (piped to grep, a folded line is two).
        console.print(escape(f"  {topic}: {difference}"), highlight=False, soft_wrap=True)


_APPLY_HELP = (
    "Make the broker's topics match the catalogue: create missing topics, add partitions, "
    "set retention, cleanup policy and other configs.\n\n"
    "Differences that cannot be applied safely (fewer partitions, another replication factor) "
    "are warnings on stderr, and left alone; the plan is on stdout.\n\n"
    "Examples:\n"
    "  pipeline topics apply --dry-run                # what would change, checked by Kafka\n"
    "  pipeline topics apply\n"
    "  pipeline topics apply --replication-factor 3   # the built-in catalogue on 3 brokers\n"
    "  pipeline topics apply --catalogue topics.toml"
)
_LIST_HELP = (
    "Show topics with partitions, replication, retention and cleanup policy.\n\n"
    "By default the catalogue's topics, marking those missing from the broker and those that "
    "differ from the catalogue, and how they differ.\n\n"
    "Examples:\n"
    "  pipeline topics list\n"
    "  pipeline topics list --all                     # every topic on the broker\n"
    "  pipeline topics list --catalogue topics.toml"
)


@app.command("apply", help=_APPLY_HELP)
def apply_command(
    ctx: typer.Context,
    catalogue_file: CatalogueOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Only show what would change, and have Kafka check it (config names and "
            "values, partition counts) without changing anything.",
        ),
    ] = False,
    replication_factor: ReplicationOption = None,
) -> None:
    """Plan the catalogue against the broker, print the plan, then apply it."""
    from pipeline.kafka.clients import build_admin
    from pipeline.topics.admin import apply_plan, describe_cluster_topics
    from pipeline.topics.plan import build_plan

    settings = _settings(ctx)
    catalogue = _catalogue(catalogue_file, replication_factor)
    bootstrap = settings.kafka.bootstrap_servers
    admin = build_admin(settings.kafka)
    with announcing_kafka(bootstrap):
        actual = describe_cluster_topics(admin, catalogue.names, bootstrap=bootstrap)
    plan = build_plan(catalogue, actual)
    console = _console()
    if plan.is_empty:
        console.print(f"no changes: {counted(len(catalogue), 'topic')} match the catalogue")
        return
    if not plan.has_changes:
        console.print("no changes to apply")
        _print_warnings(plan)
        return
    console.print(_plan_table(plan))
    _print_warnings(plan)
    if dry_run:
        apply_plan(admin, plan, bootstrap=bootstrap, validate_only=True)
        console.print(
            f"dry run: {counted(len(plan.changes), 'change')} not applied (Kafka accepts them)"
        )
        return
    apply_plan(admin, plan, bootstrap=bootstrap)
    console.print(f"applied {counted(len(plan.changes), 'change')}")


def _topics_table(bootstrap: str, names: list[str]) -> Table:
    table = Table(title=f"Topics on {bootstrap}", title_justify="left")
    _add_name_column(table, names)
    table.add_column("partitions", justify="right")
    table.add_column("replicas", justify="right")
    table.add_column("retention", justify="right")
    table.add_column("cleanup")
    table.add_column("state", no_wrap=True)
    return table


def _topic_row(name: str, actual: ActualTopic | None, state: str) -> tuple[str, ...]:
    if actual is None:
        return (name, "-", "-", "-", "-", state)
    return (
        name,
        str(actual.partitions),
        str(actual.replication_factor),
        _retention(actual.configs.get("retention.ms")),
        actual.configs.get("cleanup.policy", "?"),
        state,
    )


@app.command("list", help=_LIST_HELP)
def list_command(
    ctx: typer.Context,
    all_topics: Annotated[
        bool,
        typer.Option(
            "--all",
            help="List every topic on the broker (except Kafka's internal __* topics) "
            "instead of the catalogue's topics.",
        ),
    ] = False,
    catalogue_file: CatalogueOption = None,
    replication_factor: ReplicationOption = None,
) -> None:
    """Print a table of the catalogue's topics (or all of the broker's) as they exist."""
    from pipeline.kafka.clients import build_admin
    from pipeline.topics.admin import describe_cluster_topics, list_cluster_topics
    from pipeline.topics.plan import build_plan

    settings = _settings(ctx)
    bootstrap = settings.kafka.bootstrap_servers
    admin = build_admin(settings.kafka)
    if all_topics:
        if catalogue_file is not None or replication_factor is not None:
            raise typer.BadParameter("--all lists the broker's topics, not a catalogue's")
        with announcing_kafka(bootstrap):
            topics = list_cluster_topics(admin, bootstrap=bootstrap)
        table = _topics_table(bootstrap, list(topics))
        for name, topic in topics.items():
            table.add_row(*_topic_row(name, topic, "exists"))
        console = _console()
        console.print(table)
        if not topics:
            console.print(f"no topics on {bootstrap} (besides Kafka's internal ones)")
        return
    catalogue = _catalogue(catalogue_file, replication_factor)
    with announcing_kafka(bootstrap):
        existing = describe_cluster_topics(admin, catalogue.names, bootstrap=bootstrap)
    table = _topics_table(bootstrap, list(catalogue.names))
    plan = build_plan(catalogue, existing)
    drifted = {change.topic for change in plan.changes} | {w.topic for w in plan.warnings}
    missing = 0
    for spec in catalogue:
        actual = existing.get(spec.name)
        if actual is None:
            missing += 1
            state = "[red]missing[/red]"
        elif spec.name in drifted:
            state = "[yellow]differs[/yellow]"
        else:
            state = "ok"
        table.add_row(*_topic_row(spec.name, actual, state))
    console = _console()
    console.print(table)
    _print_differences(console, plan)
    if missing:
        # The same catalogue and replication factor: the built-in one would be applied else.
        command = ["pipeline", "topics", "apply"]
        if catalogue_file is not None:
            command += ["--catalogue", str(catalogue_file)]
        if replication_factor is not None:
            command += ["--replication-factor", str(replication_factor)]
        console.print(
            f"{missing} of {counted(len(catalogue), 'topic')} missing: run "
            f"`{escape(shlex.join(command))}`"
        )

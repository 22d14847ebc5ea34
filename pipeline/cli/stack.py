"""``pipeline stack``: a local Kafka (KRaft), Elasticsearch and PostgreSQL, without Docker."""

from __future__ import annotations

import signal
import subprocess
import time
from enum import StrEnum
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from pipeline.cli.console import stderr_console, stdout_console
from pipeline.cli.interrupts import exit_on_interrupt
from pipeline.settings import PipelineSettings
from pipeline.stack import compose

if TYPE_CHECKING:
    from pipeline.stack.manager import StackManager
    from pipeline.stack.status import StackStatus

app = typer.Typer(
    help="Run a local Apache Kafka (KRaft) and Elasticsearch fetched from Maven Central and "
    "PostgreSQL from Debian's packages, or the docker compose stack with --docker.",
    no_args_is_help=True,
)

_out = stdout_console()
_err = stderr_console()

DockerOption = typer.Option(
    False,
    "--docker",
    help="Delegate to docker compose (docker-compose.yml) instead of local processes.",
)
SecureOption = typer.Option(
    False,
    "--secure",
    help="The secure stack instead (Kafka SASL_SSL, Elasticsearch HTTPS with a password, "
    "PostgreSQL TLS), in <home>/secure on its own ports.",
)


class ComponentName(StrEnum):
    kafka = "kafka"
    elasticsearch = "elasticsearch"
    postgres = "postgres"


def _settings(ctx: typer.Context) -> PipelineSettings:
    """The settings, refused when they are a secured cluster's client's: the stacks' ports and
    addresses come from the plain settings (the secure stack's are those plus an offset), so
    with the secure stack's pipeline.env loaded, `up --secure` added the offset twice and
    rewrote pipeline.env and librdkafka.properties wrong before it failed, and `status` showed
    one stack's ports beside the other's processes."""
    from pipeline.errors import PipelineError

    settings = ctx.obj
    assert isinstance(settings, PipelineSettings)
    if settings.kafka.security_protocol != "PLAINTEXT":
        raise PipelineError(
            f"PIPELINE_KAFKA__SECURITY_PROTOCOL is {settings.kafka.security_protocol} here (the "
            "secure stack's pipeline.env loaded?): `pipeline stack` works from the plain "
            "settings; run it in a shell without them (`pipeline stack status --secure` there "
            "shows the secure stack)"
        )
    return settings


def _refuse_secure_with_docker(docker: bool, secure: bool) -> None:
    """The secure stack is local processes only: with --docker as well, every command would act
    on the plain compose stack instead (``down --secure --docker --purge`` removing its
    volumes), so the pair is refused, one line, exit code 2."""
    if docker and secure:
        _err.print("error: --secure starts local processes; it does not combine with --docker")
        raise typer.Exit(2)


def _print_status(status: StackStatus, secure: bool = False) -> None:
    table = Table(title="pipeline stack (secure)" if secure else "pipeline stack")
    # The component and its address whole (an operator checks the port): on 80 columns they
    # were "elasticsear…" at "127.0.0.1:1…", and the detail had the room.
    for column in ("component", "address"):
        table.add_column(column, no_wrap=True, min_width=len("elasticsearch"))
    for column in ("state", "version", "started by us", "detail"):
        table.add_column(column)
    for health in status.components:
        here = status.started_here(health.name)
        ours = status.records.get(health.name)
        if here is not None:
            started = f"pid {here.pid}"
        elif ours is not None:  # the settings point elsewhere: not the process at this address
            started = f"no (ours runs at {ours.address})"
        else:
            started = "no"
        table.add_row(
            health.name,
            health.address,
            "[green]up[/green]" if health.ok else "[red]down[/red]",
            health.version or ("unknown" if health.ok else "-"),
            started,
            health.detail,
        )
    _out.print(table)


#: What ``stack up`` says when Ctrl-C or SIGTERM stops it.
STACK_UP_INTERRUPTED = (
    "interrupted: what this run had started is stopped; what was already running keeps running"
)


@app.command()
def up(
    ctx: typer.Context,
    docker: bool = DockerOption,
    only: ComponentName | None = typer.Option(
        None,
        "--only",
        help="Start just this component (kafka, elasticsearch or postgres); with --docker, "
        "that compose service (and the topics job after kafka).",
    ),
    secure: bool = SecureOption,
) -> None:
    """Start Kafka, Elasticsearch and PostgreSQL unless they already answer; reuse what answers.

    The first run fetches Kafka and Elasticsearch from Maven Central (a few minutes); later runs
    start in seconds. PostgreSQL is Debian's (apt-get install postgresql), run in the stack's home.
    Ctrl-C (exit code 130) or SIGTERM (143) stops what this run had started.

    Examples:
      pipeline stack up
      pipeline stack up --only postgres
      pipeline stack up --secure           # SASL_SSL Kafka, HTTPS Elasticsearch, TLS PostgreSQL
      pipeline stack up --docker           # the docker compose stack, Kibana included
    """
    from pipeline.stack.manager import StackManager

    settings = _settings(ctx)
    _refuse_secure_with_docker(docker, secure)
    if docker:
        services = (only.value,) if only else compose.SERVICES
        with exit_on_interrupt(lambda: "interrupted: docker compose stopped"):
            code = compose.up(settings.stack.compose_file, services)
        raise typer.Exit(code)
    manager = StackManager(settings, console=_err, secure=secure)
    began = time.monotonic()
    with exit_on_interrupt(lambda: STACK_UP_INTERRUPTED):
        started = manager.up(only={only.value} if only else None)
    elapsed = time.monotonic() - began
    what = ", ".join(sorted(started)) if started else "nothing (already answering)"
    _err.print(f"started {what} in {elapsed:.1f} s")
    _print_status(manager.status(), secure)
    if manager.secure is not None:
        _print_client_settings(manager)


def _print_client_settings(manager: StackManager) -> None:
    """The settings a client of the secure stack exports; passwords only in the 0600 file."""
    from pipeline.stack.secure import env_file_text

    assert manager.secure is not None
    env_file = manager.secure.env_file
    _err.print(
        f"Clients of the secure stack: `set -a; . {env_file}; set +a` "
        f"(mode 0600, passwords included), or these settings with the passwords from that file; "
        f"kcat: -F {manager.secure.librdkafka_file}"
    )
    typer.echo(env_file_text(manager.settings, with_secrets=False), nl=False)


@app.command()
def status(ctx: typer.Context, docker: bool = DockerOption, secure: bool = SecureOption) -> None:
    """Show whether Kafka, Elasticsearch and PostgreSQL answer; exit 0 only when all do.

    Exit code 1 when one does not (its row says why); the other stack, plain or secure, is
    named when it runs too.

    Examples:
      pipeline stack status
      pipeline stack status --secure
      pipeline stack status --docker       # the compose services, and whether they answer
    """
    from pipeline.stack.manager import StackManager
    from pipeline.stack.preflight import StackError

    settings = _settings(ctx)
    _refuse_secure_with_docker(docker, secure)
    if docker:
        code = compose.run_compose(settings.stack.compose_file, "ps")
        if code != 0:
            raise typer.Exit(code)
    # Also with --docker: the published ports answer, or not.
    current = StackManager(settings, secure=secure).status()
    _print_status(current, secure)
    try:
        other = StackManager(settings, secure=not secure).running()
    except StackError:  # the other stack's files are unreadable: not this command's concern
        other = {}
    if other:
        mode, option = ("plain", "") if secure else ("secure", " --secure")
        _err.print(
            f"the {mode} stack runs too ({', '.join(sorted(other))}): pipeline stack status{option}"
        )
    if not current.healthy:
        raise typer.Exit(1)


@app.command()
def down(
    ctx: typer.Context,
    docker: bool = DockerOption,
    purge: bool = typer.Option(
        False,
        "--purge",
        help="Also delete the data: Kafka's topics, Elasticsearch's indices and PostgreSQL's "
        "databases (with --only, that component's alone; with --secure and no --only, the "
        "secure stack's credentials too, made anew by the next up --secure).",
    ),
    only: ComponentName | None = typer.Option(
        None,
        "--only",
        help="Stop just this component (kafka, elasticsearch or postgres); with --docker, "
        "that compose service (with --purge, its volume).",
    ),
    secure: bool = SecureOption,
) -> None:
    """Stop the processes `pipeline stack up` started (by their recorded ids), nothing else.

    A Kafka, Elasticsearch or PostgreSQL it did not start keeps running; the data stays
    unless --purge.

    Examples:
      pipeline stack down
      pipeline stack down --only elasticsearch
      pipeline stack down --purge          # and delete the topics, indices and databases
    """
    from pipeline.stack.manager import StackManager

    settings = _settings(ctx)
    _refuse_secure_with_docker(docker, secure)
    if docker:
        args = compose.down_arguments([only.value] if only else [], purge=purge)
        raise typer.Exit(compose.run_compose(settings.stack.compose_file, *args))
    manager = StackManager(settings, secure=secure)
    stopped = manager.down(only={only.value} if only else None, purge=purge)
    _err.print(f"stopped {', '.join(stopped)}" if stopped else "nothing of ours was running")


@app.command()
def logs(
    ctx: typer.Context,
    component: str = typer.Argument(
        ...,
        help="kafka, elasticsearch or postgres; with --docker, any service of the compose file "
        "(kibana, gateway, ...)",
    ),
    lines: int = typer.Option(50, "--lines", "-n", min=1, help="How many last lines to show."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    docker: bool = DockerOption,
    secure: bool = SecureOption,
) -> None:
    """Show the last lines of a component's log; with --follow, until Ctrl-C (exit code 130)
    or SIGTERM (143).

    Exit code 1 when the component has no log yet.

    Examples:
      pipeline stack logs kafka
      pipeline stack logs postgres -n 200
      pipeline stack logs elasticsearch --follow
      pipeline stack logs kibana --docker
    """
    from pipeline.stack.log_tail import tail
    from pipeline.stack.manager import StackManager

    settings = _settings(ctx)
    _refuse_secure_with_docker(docker, secure)
    if docker:
        command = compose.compose_command(settings.stack.compose_file)
        services = compose.service_names(command)
        if component not in services:
            raise typer.BadParameter(
                f"{component} is not a service of {settings.stack.compose_file}: "
                f"one of {', '.join(services)}",
                param_hint="'COMPONENT'",
            )
        args = ["logs", "--tail", str(lines), *(["--follow"] if follow else []), component]
        with exit_on_interrupt(lambda: f"stopped following the {component} log"):
            code = compose.run(command, *args)
        raise typer.Exit(_exit_code_of_child(code))
    try:
        name = ComponentName(component)
    except ValueError:
        raise typer.BadParameter(
            f"{component} is not one of kafka, elasticsearch, postgres (with --docker: any "
            "service of the compose file)",
            param_hint="'COMPONENT'",
        ) from None
    path = StackManager(settings, secure=secure).log_path(name.value)
    if not path.exists():
        _err.print(f"no log yet at {path}")
        raise typer.Exit(1)
    if follow:
        # An interrupt ends tail too: subprocess.run kills its child when interrupted.
        with exit_on_interrupt(lambda: f"stopped following {path}"):
            tailed = subprocess.run(["tail", "-n", str(lines), "-F", str(path)], check=False)
        raise typer.Exit(_exit_code_of_child(tailed.returncode))
    for line in tail(path, lines):
        typer.echo(line)


def _exit_code_of_child(code: int) -> int:
    """The exit code of a command that ends with its child (``tail -F``, ``compose logs``):
    the child's own, 0 when it died of SIGPIPE (the reader went away: ``stack logs -f | head
    -1`` is done, it ended with exit code 243), else 128 plus the signal, as a shell says it."""
    if code == -signal.SIGPIPE:
        return 0
    return 128 - code if code < 0 else code

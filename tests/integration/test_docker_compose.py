"""docker-compose.yml is valid for the real Compose CLI and agrees with the project's settings.

No Docker engine is needed: ``docker-compose config`` only reads and renders the file. The Compose
binary comes from ``scripts/install-compose.sh`` (built once, then cached outside the repository;
the first build takes a few minutes), or from ``PIPELINE_COMPOSE_BIN`` when that is set.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.settings import ELASTICSEARCH_VERSION, KAFKA_VERSION

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
INSTALL_SCRIPT = ROOT / "scripts" / "install-compose.sh"

# The first run builds Compose from source, which takes longer than the default test timeout.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="session")
def compose_binary() -> Path:
    configured = os.environ.get("PIPELINE_COMPOSE_BIN")
    if configured:
        return Path(configured)
    result = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1500,
    )
    if result.returncode != 0:
        pytest.fail(
            f"scripts/install-compose.sh failed ({result.returncode}):\n{result.stderr}",
            pytrace=False,
        )
    return Path(result.stdout.strip().splitlines()[-1])


def _compose(
    binary: Path, *args: str, compose_file: Path = COMPOSE_FILE
) -> subprocess.CompletedProcess[str]:
    # The caller's COMPOSE_* variables (profiles, project name, other files) must not change
    # what is checked.
    env = {key: value for key, value in os.environ.items() if not key.startswith("COMPOSE_")}
    return subprocess.run(
        [str(binary), "--project-directory", str(ROOT), "-f", str(compose_file), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def _render(binary: Path, compose_file: Path = COMPOSE_FILE) -> dict[str, Any]:
    result = _compose(binary, "config", "--format", "json", compose_file=compose_file)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


@pytest.fixture(scope="session")
def rendered(compose_binary: Path) -> dict[str, Any]:
    return _render(compose_binary)


def _tag(image: str) -> str:
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"{image} has no tag"
    return tag


def test_compose_config_accepts_the_file_without_warnings(compose_binary: Path) -> None:
    result = _compose(compose_binary, "config", "--quiet")

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_elasticsearch_and_kibana_run_the_settings_version(rendered: dict[str, Any]) -> None:
    services = rendered["services"]

    elasticsearch = _tag(services["elasticsearch"]["image"])
    kibana = _tag(services["kibana"]["image"])

    assert elasticsearch == kibana == ELASTICSEARCH_VERSION


def test_kafka_runs_the_settings_version(rendered: dict[str, Any]) -> None:
    assert _tag(rendered["services"]["kafka"]["image"]) == KAFKA_VERSION


def test_every_service_but_one_shot_jobs_has_a_healthcheck(rendered: dict[str, Any]) -> None:
    missing = []
    for name, service in rendered["services"].items():
        if service.get("labels", {}).get("pipeline.kind") == "job":
            assert service.get("restart", "no") == "no", f"job {name} must not restart"
            continue
        healthcheck = service.get("healthcheck", {})
        if not healthcheck.get("test") or healthcheck.get("disable"):
            missing.append(name)

    assert missing == []


def test_every_published_port_binds_loopback_only(rendered: dict[str, Any]) -> None:
    published = [
        (name, port)
        for name, service in rendered["services"].items()
        for port in service.get("ports", [])
        if port.get("published")
    ]

    assert published, "the stack publishes no port"
    assert [(name, port) for name, port in published if port.get("host_ip") != "127.0.0.1"] == []


def test_compose_runs_every_service_the_demo_runs(rendered: dict[str, Any]) -> None:
    from pipeline.cli.demo_sagas import SAGA_SERVICES
    from pipeline.cli.demo_services import PROCESSOR_SPEC

    commands = [service.get("command") or [] for service in rendered["services"].values()]
    processed = {command[1] for command in commands if command[:1] == ["process"]}
    assert processed == {PROCESSOR_SPEC, *(spec for _, spec in SAGA_SERVICES)}
    assert ["outbox", "relay", "--metrics-port", "9100"] in commands
    assert ["logs", "ship", "--metrics-port", "9100"] in commands
    assert any(command[:1] == ["gateway"] for command in commands)


# --- What the services run must work, not only look right: every check below is a function
# of the rendered file returning its problems, run on the real file and on copies with one
# mistake each (test_each_check_finds_its_mistake_in_a_copy_of_the_file).

#: Where the image has the repository (Dockerfile: WORKDIR /opt/pipeline, COPY . .).
SOURCE_IN_IMAGE = "/opt/pipeline/"


def _pipeline_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from the project's image, whose command is `pipeline`'s arguments."""
    return {name: service for name, service in config["services"].items() if "build" in service}


def _option(command: list[str], name: str) -> list[str]:
    return [value for option, value in itertools.pairwise(command) if option == name]


def _unread_settings() -> set[str]:
    """The settings docs/settings.md says no `pipeline` command reads."""
    return {
        re.findall(r"`(PIPELINE_\w+)`", line)[0]
        for line in (ROOT / "docs" / "settings.md").read_text().splitlines()
        if "not read by the `pipeline` commands" in line
    }


def env_problems(config: dict[str, Any]) -> list[str]:
    """Every PIPELINE_* variable of every service is a setting's (pydantic-settings ignores
    any other name, so a misspelt one silently leaves the default), and one the commands read."""
    from pipeline.settings import misspelled_settings, setting_variables

    known, unread = setting_variables(), _unread_settings()
    problems = []
    for name, service in config["services"].items():
        variables = [
            v for v in service.get("environment") or {} if v.upper().startswith("PIPELINE_")
        ]
        meant = misspelled_settings(variables)
        for variable in variables:
            if variable.upper() not in known:
                hint = f" (did you mean {meant[variable]}?)" if variable in meant else ""
                problems.append(f"{name}: {variable} is not a setting{hint}")
            elif variable.upper() in unread:
                problems.append(f"{name}: no command reads {variable} (docs/settings.md)")
    return problems


def _parse(arguments: list[str]) -> None:
    """Parse ``pipeline ARGUMENTS`` as the real command line does, running nothing: options,
    their types and checks, required and extra arguments; raises Click's UsageError (Typer's
    own Click, as pipeline/cli/main.py uses)."""
    import typer
    from typer import _click as click
    from typer.core import TyperGroup

    from pipeline.cli.main import app

    command: click.Command = typer.main.get_command(app)
    name, rest, parent = "pipeline", list(arguments), None
    while isinstance(command, TyperGroup):
        parent = click.Context(command, info_name=name, parent=parent)
        rest = click.Command.parse_args(command, parent, rest)  # the group's own options
        if not rest and command.invoke_without_command:  # `pipeline gateway --port 8080`
            return
        if not rest:
            parent.fail("Missing command.")
        resolved, subcommand, rest = command.resolve_command(parent, rest)
        assert resolved is not None and subcommand is not None
        name, command = resolved, subcommand
    command.make_context(name, rest, parent=parent)


def command_problems(config: dict[str, Any]) -> list[str]:
    """Every service's `pipeline` command line parses against the real app."""
    from typer._click.exceptions import ClickException

    from pipeline.errors import PipelineError

    problems = []
    for name, service in _pipeline_services(config).items():
        command = service.get("command") or []
        try:
            _parse(command)
        except ClickException as error:
            problems.append(f"{name}: pipeline {' '.join(command)}: {error.format_message()}")
        except PipelineError as error:
            problems.append(f"{name}: pipeline {' '.join(command)}: {error}")
    return problems


def file_problems(config: dict[str, Any]) -> list[str]:
    """Every path a command names is a file of the repository, as the image has it."""
    ignored = {
        line.strip().strip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    problems = []
    for name, service in _pipeline_services(config).items():
        for argument in service.get("command") or []:
            if "/" not in argument or "://" in argument:
                continue
            relative = argument.removeprefix(SOURCE_IN_IMAGE)
            if relative == argument:
                problems.append(f"{name}: {argument} is not under {SOURCE_IN_IMAGE}")
            elif not (ROOT / relative).is_file():
                problems.append(f"{name}: {argument}: the repository has no {relative}")
            elif relative.split("/")[0] in ignored:
                problems.append(f"{name}: {argument}: .dockerignore leaves it out of the image")
    return problems


def kibana_url_problems(config: dict[str, Any]) -> list[str]:
    """`dashboards import` names Kibana by its compose service and the port Kibana serves
    (the default, 127.0.0.1, is the job's own container)."""
    from urllib.parse import urlsplit

    kibana_ports = {port["target"] for port in config["services"]["kibana"].get("ports", [])}
    problems = []
    for name, service in _pipeline_services(config).items():
        command = service.get("command") or []
        urls = _option(command, "--kibana-url")
        if command[:2] == ["dashboards", "import"] and not urls:
            problems.append(f"{name}: dashboards import without --kibana-url")
        for url in urls:
            parts = urlsplit(url)
            if parts.hostname != "kibana" or parts.port not in kibana_ports:
                problems.append(f"{name}: {url} is not the kibana service on {kibana_ports}")
    return problems


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` as name -> (host, port)."""
    found = {}
    for entry in value.split(","):
        listener, _, address = entry.partition("://")
        host, _, port = address.rpartition(":")
        found[listener] = (host, int(port))
    return found


def kafka_listener_problems(config: dict[str, Any]) -> list[str]:
    """Kafka advertises, on the listener each client connects to, an address that client can
    reach: the kafka service for the containers' bootstrap servers, 127.0.0.1 and the
    published port for the host's."""
    kafka = config["services"]["kafka"]
    environment = kafka["environment"]
    bound = {name: port for name, (_, port) in _listeners(environment["KAFKA_LISTENERS"]).items()}
    advertised = _listeners(environment["KAFKA_ADVERTISED_LISTENERS"])
    by_port = {port: advertised.get(name) for name, port in bound.items()}
    kafka_hosts = {"kafka", kafka.get("hostname")}
    problems = []
    for name, service in config["services"].items():
        servers = (service.get("environment") or {}).get("PIPELINE_KAFKA__BOOTSTRAP_SERVERS")
        for server in servers.split(",") if servers else []:
            host, _, port = server.rpartition(":")
            if host not in kafka_hosts:
                problems.append(f"{name}: bootstrap server {server} is not the kafka service")
            if by_port.get(int(port)) != (host, int(port)):
                problems.append(
                    f"{name}: connects to {server}, where Kafka advertises {by_port.get(int(port))}"
                )
    published = [port for port in kafka.get("ports", []) if port.get("published")]
    if not published:
        problems.append("kafka publishes no port for the host")
    for port in published:
        expected = ("127.0.0.1", int(port["published"]))
        if by_port.get(port["target"]) != expected:
            problems.append(
                f"the host reaches Kafka at 127.0.0.1:{port['published']}, where Kafka "
                f"advertises {by_port.get(port['target'])}"
            )
    return problems


def job_problems(config: dict[str, Any]) -> list[str]:
    """Every one-shot job is some service's dependency with service_completed_successfully:
    only then does `docker compose up --wait` accept the job's exit."""
    services = config["services"]
    awaited = {
        dependency
        for service in services.values()
        for dependency, how in (service.get("depends_on") or {}).items()
        if how.get("condition") == "service_completed_successfully"
    }
    return [
        f"job {name} is no service's dependency (service_completed_successfully)"
        for name, service in services.items()
        if service.get("labels", {}).get("pipeline.kind") == "job" and name not in awaited
    ]


CHECKS = {
    "env": env_problems,
    "commands": command_problems,
    "files": file_problems,
    "kibana-url": kibana_url_problems,
    "kafka-listeners": kafka_listener_problems,
    "jobs": job_problems,
}


@pytest.mark.parametrize("check", list(CHECKS), ids=list(CHECKS))
def test_the_file_passes_each_check(rendered: dict[str, Any], check: str) -> None:
    assert CHECKS[check](rendered) == []


def test_docs_name_the_settings_no_command_reads() -> None:
    assert "PIPELINE_SERVICE_NAME" in _unread_settings()


def test_the_image_has_the_repository_where_the_checks_look() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert f"WORKDIR {SOURCE_IN_IMAGE.rstrip('/')}\nCOPY . ." in dockerfile
    assert 'ENTRYPOINT ["pipeline"]' in dockerfile


#: (check, text of the file, the same with one mistake).
MISTAKES = {
    "env-misspelt": (
        "env",
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS: kafka",
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS: kafka",
    ),
    "env-unknown": ("env", "PIPELINE_DATABASE__PASSWORD:", "PIPELINE_DATABASE__PASSWD:"),
    "env-unread": (
        "env",
        "    PIPELINE_DATABASE__PASSWORD: pipeline\n",
        "    PIPELINE_DATABASE__PASSWORD: pipeline\n    PIPELINE_SERVICE_NAME: gateway\n",
    ),
    "option": ("commands", '"--host", "0.0.0.0"', '"--hots", "0.0.0.0"'),
    "option-type": ("commands", '"--port", "8080"', '"--port", "http"'),
    "subcommand": ("commands", '["topics", "apply"]', '["topics", "aply"]'),
    "import-file": (
        "files",
        "- /opt/pipeline/dashboards/pipeline-logs.ndjson",
        "- /opt/pipeline/dashboards/pipeline-log.ndjson",
    ),
    "import-file-relative": (
        "files",
        "- /opt/pipeline/dashboards/pipeline-logs.ndjson",
        "- dashboards/pipeline-logs.ndjson",
    ),
    "kibana-host": ("kibana-url", "- http://kibana:5601", "- http://127.0.0.1:5601"),
    "kibana-port": ("kibana-url", "- http://kibana:5601", "- http://kibana:9200"),
    "advertised-container": (
        "kafka-listeners",
        "PLAINTEXT://kafka:29092,",
        "PLAINTEXT://localhost:29092,",
    ),
    "advertised-host": ("kafka-listeners", "HOST://127.0.0.1:9092", "HOST://kafka:9092"),
    "job-awaited": (
        "jobs",
        "      dashboards:\n        condition: service_completed_successfully\n",
        "",
    ),
}


@pytest.mark.parametrize("mistake", list(MISTAKES), ids=list(MISTAKES))
def test_each_check_finds_its_mistake_in_a_copy_of_the_file(
    compose_binary: Path, tmp_path: Path, mistake: str
) -> None:
    check, right, wrong = MISTAKES[mistake]
    text = COMPOSE_FILE.read_text()
    assert text.count(right) == 1, f"{right!r} is not once in the file"
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(text.replace(right, wrong))

    assert CHECKS[check](_render(compose_binary, copy)) != []

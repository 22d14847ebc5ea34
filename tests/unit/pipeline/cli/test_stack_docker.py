"""``pipeline stack ... --docker``: the compose command lines it runs, checked with a fake
``docker`` on PATH that records its arguments (no Docker engine needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.stack import compose
from pipeline.stack.preflight import StackError

FAKE_DOCKER = """#!/bin/sh
# Records each call; answers as an engine with (FAKE_COMPOSE_PLUGIN=1) or without the plugin.
printf '%s\\n' "$*" >> "$FAKE_DOCKER_LOG"
case "$1 $2" in
    "info "*) exit 0 ;;
    "compose version")
        [ "$FAKE_COMPOSE_PLUGIN" = 1 ] && exit 0
        echo "docker: unknown command: docker compose" >&2; exit 1 ;;
    "compose -f")
        if [ "$FAKE_COMPOSE_PLUGIN" != 1 ]; then
            echo "unknown shorthand flag: 'f' in -f" >&2; exit 125
        fi ;;
esac
case "$*" in
    *"config --services")
        printf '%s\\n' kafka elasticsearch kibana postgres topics gateway ;;
esac
exit 0
"""


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def compose_file(tmp_path: Path) -> Path:
    path = tmp_path / "docker-compose.yml"
    path.write_text("services: {}\n")
    return path


@pytest.fixture
def calls(tmp_path: Path, compose_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The log of the fake docker's calls; docker has the compose plugin unless a test says."""
    _executable(tmp_path / "bin" / "docker", FAKE_DOCKER)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("FAKE_COMPOSE_PLUGIN", "1")
    # No cached docker-compose but the one a test puts there.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PIPELINE_STACK__HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIPELINE_STACK__COMPOSE_FILE", str(compose_file))
    return log


def _compose_calls(log: Path, compose_file: Path) -> list[str]:
    """The compose sub-commands run, without the engine and plugin checks."""
    prefix = f"compose -f {compose_file} "
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]


def _stack(*args: str) -> Any:
    return CliRunner().invoke(app, ["stack", *args])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["up", "--docker"],
            ["up --detach --wait kafka elasticsearch kibana postgres", "run --rm topics"],
        ),
        (["up", "--docker", "--only", "kafka"], ["up --detach --wait kafka", "run --rm topics"]),
        (["up", "--docker", "--only", "elasticsearch"], ["up --detach --wait elasticsearch"]),
        (["up", "--docker", "--only", "postgres"], ["up --detach --wait postgres"]),
        (["down", "--docker"], ["down"]),
        (["down", "--docker", "--purge"], ["down --volumes"]),
        (["down", "--docker", "--only", "elasticsearch"], ["down elasticsearch"]),
        (["down", "--docker", "--only", "kafka", "--purge"], ["down --volumes kafka"]),
        (["logs", "--docker", "kibana"], ["config --services", "logs --tail 50 kibana"]),
        (
            ["logs", "--docker", "gateway", "-n", "5", "-f"],
            ["config --services", "logs --tail 5 --follow gateway"],
        ),
        (["logs", "--docker", "kafka"], ["config --services", "logs --tail 50 kafka"]),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_docker_commands_run_these_compose_command_lines(
    args: list[str], expected: list[str], calls: Path, compose_file: Path
) -> None:
    result = _stack(*args)

    assert result.exit_code == 0, (result.output, result.exception)
    assert _compose_calls(calls, compose_file) == expected


@pytest.mark.parametrize(
    "args",
    [
        ["up", "--docker", "--secure"],
        ["status", "--docker", "--secure"],
        ["down", "--docker", "--secure", "--purge"],
        ["logs", "--docker", "--secure", "kafka"],
    ],
    ids=" ".join,
)
def test_secure_with_docker_is_refused_before_any_compose_command(
    args: list[str], calls: Path, compose_file: Path
) -> None:
    # Before, all but up ran the plain compose stack's command (down --purge: its volumes).
    result = _stack(*args)

    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: --secure starts local processes; it does not combine with --docker"
    )
    assert _compose_calls(calls, compose_file) == []


def test_logs_docker_refuses_a_name_that_is_no_compose_service(
    calls: Path, compose_file: Path
) -> None:
    result = _stack("logs", "--docker", "kibanna")

    assert result.exit_code == 2
    assert "kibanna is not a service of" in result.output
    assert "one of kafka, elasticsearch, kibana, postgres, topics, gateway" in result.output
    assert _compose_calls(calls, compose_file) == ["config --services"]


def test_logs_without_docker_still_takes_only_the_local_components(
    calls: Path, compose_file: Path
) -> None:
    result = _stack("logs", "kibana")

    assert result.exit_code == 2
    assert "kibana is not one of kafka, elasticsearch, postgres" in result.output
    assert not calls.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["up", "--docker"],
        ["down", "--docker"],
        ["status", "--docker"],
        ["logs", "--docker", "kafka"],
    ],
    ids=["up", "down", "status", "logs"],
)
def test_without_the_compose_plugin_docker_says_so_in_one_line(
    args: list[str], calls: Path, compose_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_COMPOSE_PLUGIN", "0")

    result = _stack(*args)

    # A PipelineError: the entry point prints it as one line and exits 2.
    assert isinstance(result.exception, StackError), (result.output, result.exception)
    assert str(result.exception) == compose.NO_COMPOSE
    assert "\n" not in compose.NO_COMPOSE
    assert _compose_calls(calls, compose_file) == []  # never docker's "unknown shorthand flag"


def test_without_the_plugin_the_cached_compose_runs_instead(
    tmp_path: Path, calls: Path, compose_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_COMPOSE_PLUGIN", "0")
    tools = tmp_path / "cache" / "pipeline" / "tools"
    cached_log = tmp_path / "cached.log"
    script = f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {cached_log}\n"
    _executable(tools / "docker-compose-v2.40.3" / "docker-compose", script)
    _executable(tools / "docker-compose-v2.9.0" / "docker-compose", "#!/bin/sh\nexit 3\n")

    result = _stack("down", "--docker", "--only", "postgres")

    assert result.exit_code == 0, (result.output, result.exception)
    assert cached_log.read_text().splitlines() == [f"-f {compose_file} down postgres"]


def test_down_arguments() -> None:
    assert compose.down_arguments() == ["down"]
    assert compose.down_arguments(["kafka"], purge=True) == ["down", "--volumes", "kafka"]

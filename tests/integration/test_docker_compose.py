"""docker-compose.yml is valid for the real Compose CLI and agrees with the project's settings.

No Docker engine is needed: ``docker-compose config`` only reads and renders the file. The Compose
binary comes from ``scripts/install-compose.sh`` (built once, then cached outside the repository;
the first build takes a few minutes), or from ``PIPELINE_COMPOSE_BIN`` when that is set.
"""

from __future__ import annotations

import json
import os
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


def _compose(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The caller's COMPOSE_* variables (profiles, project name, other files) must not change
    # what is checked.
    env = {key: value for key, value in os.environ.items() if not key.startswith("COMPOSE_")}
    return subprocess.run(
        [str(binary), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


@pytest.fixture(scope="session")
def rendered(compose_binary: Path) -> dict[str, Any]:
    result = _compose(compose_binary, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


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

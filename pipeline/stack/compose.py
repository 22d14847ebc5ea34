"""``--docker``: the same stack commands, delegated to docker compose where an engine runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pipeline.stack.preflight import StackError


def compose_command(compose_file: Path) -> list[str]:
    """``docker compose -f FILE``, after checking that a Docker engine answers."""
    docker = shutil.which("docker")
    if docker is None:
        raise StackError("--docker needs Docker, and `docker` is not installed")
    if not compose_file.exists():
        raise StackError(f"--docker needs {compose_file}; run it from the project folder")
    engine = subprocess.run([docker, "info"], capture_output=True, text=True, check=False)
    if engine.returncode != 0:
        raise StackError("--docker needs a Docker engine, and none answers (`docker info` failed)")
    return [docker, "compose", "-f", str(compose_file)]


def run_compose(compose_file: Path, *args: str) -> int:
    """Run a compose sub-command in the foreground, its output shown as it comes."""
    return subprocess.run([*compose_command(compose_file), *args], check=False).returncode


#: The long-running services; one-shot jobs (``topics``) are run after them.
SERVICES = ("kafka", "elasticsearch", "kibana", "postgres")


def up(compose_file: Path) -> int:
    """Start the services, wait for their health checks, then apply the topics."""
    code = run_compose(compose_file, "up", "--detach", "--wait", *SERVICES)
    if code != 0:
        return code
    return run_compose(compose_file, "run", "--rm", "topics")

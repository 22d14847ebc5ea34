"""``--docker``: the same stack commands, delegated to docker compose where an engine runs.

Compose is Docker's plugin (``docker compose``) when the docker CLI has it, else the standalone
Compose v2 that ``scripts/install-compose.sh`` builds and caches in
``${XDG_CACHE_HOME:-~/.cache}/pipeline/tools/docker-compose-VERSION/docker-compose``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pipeline.stack.preflight import StackError

#: What ``--docker`` says when the docker CLI has no compose plugin and none is cached.
NO_COMPOSE = (
    "--docker needs Docker Compose v2, and this docker has no compose plugin (`docker compose "
    "version` failed) and no cached docker-compose was found: install Docker's "
    "docker-compose-plugin package, or build one with scripts/install-compose.sh"
)


def cached_compose() -> Path | None:
    """The newest standalone Compose v2 that scripts/install-compose.sh cached, if any."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    found = []
    for binary in (cache / "pipeline" / "tools").glob("docker-compose-v2.*/docker-compose"):
        version = re.fullmatch(r"docker-compose-v(\d+)\.(\d+)\.(\d+)", binary.parent.name)
        if version and os.access(binary, os.X_OK):
            found.append((tuple(int(part) for part in version.groups()), binary))
    return max(found)[1] if found else None


def compose_command(compose_file: Path) -> list[str]:
    """``docker compose -f FILE`` (or the cached ``docker-compose -f FILE``), after checking
    that a Docker engine answers."""
    docker = shutil.which("docker")
    if docker is None:
        raise StackError("--docker needs Docker, and `docker` is not installed")
    if not compose_file.exists():
        raise StackError(f"--docker needs {compose_file}; run it from the project folder")
    engine = subprocess.run([docker, "info"], capture_output=True, text=True, check=False)
    if engine.returncode != 0:
        raise StackError("--docker needs a Docker engine, and none answers (`docker info` failed)")
    # Without the plugin, `docker compose -f FILE ...` ends with docker's own
    # "unknown shorthand flag: 'f' in -f" (exit 125), which does not say what is missing.
    plugin = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if plugin.returncode == 0:
        return [docker, "compose", "-f", str(compose_file)]
    cached = cached_compose()
    if cached is None:
        raise StackError(NO_COMPOSE)
    return [str(cached), "-f", str(compose_file)]


def run(command: Sequence[str], *args: str) -> int:
    """Run a compose sub-command in the foreground, its output shown as it comes."""
    return subprocess.run([*command, *args], check=False).returncode


def run_compose(compose_file: Path, *args: str) -> int:
    """Run a compose sub-command of ``compose_file`` (see :func:`run`)."""
    return run(compose_command(compose_file), *args)


def service_names(command: Sequence[str]) -> list[str]:
    """The services the compose file defines (``compose config --services``)."""
    result = subprocess.run(
        [*command, "config", "--services"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit code {result.returncode}"]
        raise StackError(f"cannot read the compose file's services: {lines[-1]}")
    return result.stdout.split()


#: The long-running servers ``up`` starts; one-shot jobs (``topics``) are run after them.
SERVICES = ("kafka", "elasticsearch", "kibana", "postgres")


def up(compose_file: Path, services: Sequence[str] = SERVICES) -> int:
    """Start ``services``, wait for their health checks, then apply the topics when Kafka is
    one of them."""
    command = compose_command(compose_file)
    code = run(command, "up", "--detach", "--wait", *services)
    if code != 0 or "kafka" not in services:
        return code
    return run(command, "run", "--rm", "topics")


def down_arguments(services: Sequence[str] = (), purge: bool = False) -> list[str]:
    """``down`` for ``services`` (all when none; Compose v2.20+ takes ``down SERVICE...``),
    with their named volumes when ``purge``."""
    return ["down", *(["--volumes"] if purge else []), *services]

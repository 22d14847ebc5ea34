"""A single-node Elasticsearch for development: its configuration and command line."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from pipeline.stack.distribution import ElasticsearchDistribution
from pipeline.stack.preflight import Java


def elasticsearch_yml(
    host: str, http_port: int, transport_port: int, data_dir: Path, logs_dir: Path
) -> str:
    """Security off, single node, bound to one address, data and logs in the state folder."""
    settings = {
        "cluster.name": "pipeline",
        "node.name": "pipeline-es",
        "network.host": host,
        "http.port": str(http_port),
        "transport.port": str(transport_port),
        "discovery.type": "single-node",
        "path.data": str(data_dir),
        "path.logs": str(logs_dir),
        "xpack.security.enabled": "false",
        "action.destructive_requires_name": "false",
        # A development disk may be fuller than a server's; do not go read-only at 95 %.
        "cluster.routing.allocation.disk.threshold_enabled": "false",
    }
    return "".join(f"{key}: {value}\n" for key, value in settings.items())


def run_as_user(configured_user: str) -> str | None:
    """The dedicated user to run Elasticsearch as, when we are root (it refuses root)."""
    return configured_user if os.geteuid() == 0 else None


def current_user() -> str:
    return getpass.getuser()


def server_command(
    java: Java,
    distribution: ElasticsearchDistribution,
    conf_dir: Path,
    pid_file: Path,
    heap: str,
    user: str | None,
) -> list[str]:
    """The launcher's command line; through ``runuser`` when it must not run as root."""
    environment = [
        f"ES_PATH_CONF={conf_dir}",
        f"ES_JAVA_HOME={java.home}",
        f"ES_JAVA_OPTS=-Xms{heap} -Xmx{heap}",
    ]
    launch = ["env", *environment, str(distribution.launcher), "-p", str(pid_file)]
    if user is None:
        return launch
    return ["runuser", "-u", user, "--", *launch]

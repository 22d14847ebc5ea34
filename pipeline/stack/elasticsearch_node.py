"""A single-node Elasticsearch for development: its configuration and command line."""

from __future__ import annotations

import base64
import getpass
import hashlib
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


#: Where the secure node's certificate, key and CA are copied, inside its config folder
#: (Elasticsearch reads files there only).
CERTS_FOLDER = "certs"


def secure_elasticsearch_yml(
    host: str, http_port: int, transport_port: int, data_dir: Path, logs_dir: Path
) -> str:
    """:func:`elasticsearch_yml` with security on: HTTPS with the stack's certificate, users
    from the file realm (:func:`file_realm_users`). A single node needs no transport TLS."""
    plain = elasticsearch_yml(host, http_port, transport_port, data_dir, logs_dir)
    lines = [line for line in plain.splitlines() if not line.startswith("xpack.security.")]
    settings = {
        "xpack.security.enabled": "true",
        "xpack.security.enrollment.enabled": "false",
        "xpack.security.http.ssl.enabled": "true",
        "xpack.security.http.ssl.key": f"{CERTS_FOLDER}/server.key",
        "xpack.security.http.ssl.certificate": f"{CERTS_FOLDER}/server.crt",
        "xpack.security.http.ssl.certificate_authorities": f"{CERTS_FOLDER}/ca.crt",
        "xpack.security.transport.ssl.enabled": "false",
    }
    return "\n".join(lines) + "\n" + "".join(f"{k}: {v}\n" for k, v in settings.items())


def pbkdf2_hash(password: str, salt: bytes, iterations: int = 10_000) -> str:
    """Elasticsearch's ``{PBKDF2}`` password hash (PBKDF2 with HMAC-SHA512, a 256-bit key):
    ``{PBKDF2}<iterations>$<salt, base64>$<key, base64>``.

    By hand, as the ``elasticsearch-users`` tool would need a JVM start and the password on
    its command line; hashlib has the function and the format is three fields.
    """
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=32)
    encoded = base64.b64encode(salt).decode(), base64.b64encode(key).decode()
    return f"{{PBKDF2}}{iterations}${encoded[0]}${encoded[1]}"


def file_realm_users(username: str, password: str, salt: bytes) -> tuple[str, str]:
    """The file realm's ``users`` and ``users_roles`` files: ``username`` a superuser."""
    return f"{username}:{pbkdf2_hash(password, salt)}\n", f"superuser:{username}\n"


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

"""The settings of the local stack (``pipeline stack``): where it lives, its ports and its
releases."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import (
    Field,
    SecretStr,
    field_validator,
)

from pipeline.settings.base import _Frozen

KAFKA_VERSION = "3.9.1"
KAFKA_SCALA_VERSION = "2.13"
ELASTICSEARCH_VERSION = "8.19.3"


#: A size the JVM's -Xms and -Xmx take: bytes, or a number of k, m, g or t.
_JVM_SIZE = re.compile(r"[1-9][0-9]*[kKmMgGtT]?")


def _default_stack_home() -> Path:
    # Elasticsearch runs as a dedicated user when we are root, and that user cannot enter
    # /root, so root's stack lives in a world-traversable place.
    if os.geteuid() == 0:
        return Path("/var/lib/pipeline")
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "pipeline"


class StackSettings(_Frozen):
    """The local Kafka + Elasticsearch + PostgreSQL stack started by ``pipeline stack up``."""

    home: Path = Field(default_factory=_default_stack_home)
    #: Where fetched distributions are kept; default ``<home>/dist``. Stacks may share it.
    dist_dir: Path | None = None
    kafka_version: str = KAFKA_VERSION
    kafka_scala_version: str = KAFKA_SCALA_VERSION
    kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    kafka_heap: str = "512m"
    elasticsearch_version: str = ELASTICSEARCH_VERSION
    elasticsearch_transport_port: int = Field(default=9300, ge=1, le=65535)
    elasticsearch_heap: str = "1g"
    elasticsearch_user: str = "pipeline-es"
    #: PostgreSQL from Debian's packages, on 127.0.0.1 (see pipeline/stack/postgres_node.py).
    postgres_port: int = Field(default=5432, ge=1, le=65535)
    #: The system user that owns the cluster and runs the server when we are root.
    postgres_user: str = "pipeline-pg"
    #: The login role, its password and its database, created once after initdb.
    postgres_role: str = "pipeline"
    postgres_password: SecretStr = SecretStr("pipeline")
    postgres_database: str = "pipeline"
    #: Where ``postgres`` and ``initdb`` are; default ``pg_config --bindir``, else the newest
    #: ``/usr/lib/postgresql/*/bin``.
    postgres_bin_dir: Path | None = None
    start_timeout_s: float = Field(default=120.0, gt=0)
    #: The secure stack (``pipeline stack up --secure``, home ``<home>/secure``) listens on
    #: each of these ports plus this offset, so both stacks can run at once.
    secure_port_offset: int = Field(default=10, ge=1, le=10_000)
    compose_file: Path = Path("docker-compose.yml")

    @field_validator("kafka_heap", "elasticsearch_heap")
    @classmethod
    def _jvm_heap_size(cls, value: str) -> str:
        # Else the JVM refused it at start ("Invalid initial heap size: -Xms1gb").
        if not _JVM_SIZE.fullmatch(value):
            raise ValueError(f"{value!r} is no JVM heap size: a number, then k, m or g (512m, 1g)")
        return value

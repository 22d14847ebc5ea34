"""The secure local stack (``pipeline stack up --secure``): where it lives, its credentials, and
the settings that point clients at it.

It runs beside the plain stack: its own home (``<home>/secure``, so its own state, data and
process records), its own ports (each of the plain stack's plus
``stack.secure_port_offset``), the distributions fetched once for both. What it holds:

1. ``certs/``: a local CA and the server certificate (:mod:`pipeline.stack.certificates`);
2. ``credentials.json`` (0600): one generated password each for Kafka's SCRAM-SHA-512 user,
   Elasticsearch's user and PostgreSQL's role, all named ``pipeline``; made once, kept;
3. ``pipeline.env`` (0600): the ``PIPELINE_*`` settings of a client of this stack, passwords
   included, to be sourced (``set -a; . pipeline.env; set +a``) or read by a program;
4. ``librdkafka.properties`` (0600): the same for kcat and other librdkafka tools (``-F``).

Passwords are written to those files only: never printed, logged or put in an error.
"""

from __future__ import annotations

import json
import secrets
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from pipeline.settings import (
    DatabaseSettings,
    ElasticsearchSettings,
    KafkaSettings,
    PipelineSettings,
    StackSettings,
)
from pipeline.stack.certificates import CertificateFiles, ensure_certificates, write_private
from pipeline.stack.preflight import StackError, split_host_port

#: The user (Kafka SCRAM, Elasticsearch) and role (PostgreSQL) clients sign in as.
USERNAME = "pipeline"
#: Kafka's SASL mechanism on the secure listener.
KAFKA_MECHANISM = "SCRAM-SHA-512"
_COMPONENTS = ("kafka", "elasticsearch", "postgres")


@dataclass(frozen=True)
class Credentials:
    """The secure stack's passwords, one per component."""

    kafka: SecretStr
    elasticsearch: SecretStr
    postgres: SecretStr

    def values(self) -> list[str]:
        return [
            secret.get_secret_value() for secret in (self.kafka, self.elasticsearch, self.postgres)
        ]


def redact(text: str, credentials: Credentials | None) -> str:
    """``text`` with every password of ``credentials`` replaced by ``***``."""
    for value in credentials.values() if credentials is not None else []:
        text = text.replace(value, "***")
    return text


class SecureStack:
    """The secure stack of the stack settings in ``base`` (nothing is written until asked)."""

    def __init__(self, base: PipelineSettings) -> None:
        self._base = base
        self.home = base.stack.home / "secure"
        self.certificates = CertificateFiles(self.home / "certs")
        self.credentials_file = self.home / "credentials.json"
        self.env_file = self.home / "pipeline.env"
        self.librdkafka_file = self.home / "librdkafka.properties"

    # ---- credentials -----------------------------------------------------------------------

    def load_credentials(self) -> Credentials | None:
        """The stored passwords, or ``None`` when the secure stack was never set up."""
        try:
            stored = json.loads(self.credentials_file.read_text())
            return Credentials(**{name: SecretStr(str(stored[name])) for name in _COMPONENTS})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            raise StackError(
                f"{self.credentials_file} is unreadable or incomplete; delete the secure stack "
                "with its data and credentials (pipeline stack down --secure --purge), then "
                "pipeline stack up --secure makes new ones"
            ) from None

    def prepare(self) -> Credentials:
        """Certificates, credentials and client files, made where missing; the credentials."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o755)  # the services' own users go through it to their folders
        ensure_certificates(self.certificates.folder)
        credentials = self.load_credentials()
        if credentials is None:
            passwords = {name: secrets.token_urlsafe(24) for name in _COMPONENTS}
            write_private(self.credentials_file, json.dumps(passwords).encode())
            credentials = Credentials(**{k: SecretStr(v) for k, v in passwords.items()})
        settings = self.settings(credentials)
        write_private(self.env_file, env_file_text(settings, with_secrets=True).encode())
        write_private(self.librdkafka_file, librdkafka_properties(settings.kafka).encode())
        return credentials

    def remove_credentials(self) -> None:
        """Delete the stored passwords and the client files holding them (``down --secure
        --purge``): the next :meth:`prepare` makes new ones. The certificates are kept."""
        for path in (self.credentials_file, self.env_file, self.librdkafka_file):
            if path.is_dir() and not path.is_symlink():  # made by hand: as unreadable as a bad file
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    # ---- settings ----------------------------------------------------------------------------

    def settings(self, credentials: Credentials | None = None) -> PipelineSettings:
        """``base`` pointed at the secure stack (passwords from ``credentials``, or stored)."""
        return self.settings_with(credentials or self.load_credentials())

    def settings_with(self, credentials: Credentials | None) -> PipelineSettings:
        """``base`` pointed at the secure stack, with the passwords of ``credentials`` (none
        without them: enough to find its folders and processes)."""
        base = self._base
        offset = base.stack.secure_port_offset
        kafka_host, kafka_port = split_host_port(base.kafka.bootstrap_servers.split(",")[0])
        es_host, es_port = split_host_port(base.elasticsearch.url)
        ca = self.certificates.ca_certificate
        stack = base.stack.model_copy(
            update={
                "home": self.home,
                "dist_dir": base.stack.dist_dir or base.stack.home / "dist",
                "kafka_controller_port": base.stack.kafka_controller_port + offset,
                "elasticsearch_transport_port": base.stack.elasticsearch_transport_port + offset,
                "postgres_port": base.stack.postgres_port + offset,
                "postgres_role": USERNAME,
                "postgres_password": credentials.postgres if credentials else SecretStr(""),
            }
        )
        kafka = KafkaSettings(
            bootstrap_servers=f"{kafka_host}:{kafka_port + offset}",
            client_id=base.kafka.client_id,
            security_protocol="SASL_SSL",
            sasl_mechanism=KAFKA_MECHANISM,
            # Both or neither (a settings rule): without the credentials, no login at all.
            sasl_username=USERNAME if credentials else None,
            sasl_password=credentials.kafka if credentials else None,
            ssl_ca_location=ca,
        )
        elasticsearch = ElasticsearchSettings(
            url=f"https://{es_host}:{es_port + offset}",
            username=USERNAME,
            password=credentials.elasticsearch if credentials else None,
            ca_certs=ca,
            request_timeout_s=base.elasticsearch.request_timeout_s,
        )
        database = DatabaseSettings(
            url=secure_database_url(stack, ca),
            password=credentials.postgres if credentials else None,
        )
        return base.model_copy(
            update={
                "stack": stack,
                "kafka": kafka,
                "elasticsearch": elasticsearch,
                "database": database,
            }
        )


def secure_database_url(stack: StackSettings, ca: Path, database: str | None = None) -> str:
    """The stack's PostgreSQL over TLS, its certificate checked against ``ca`` (no password)."""
    name = database or stack.postgres_database
    return (
        f"postgresql+psycopg://{stack.postgres_role}@127.0.0.1:{stack.postgres_port}/{name}"
        f"?sslmode=verify-full&sslrootcert={ca}"
    )


def client_environment(settings: PipelineSettings) -> dict[str, str | SecretStr]:
    """The ``PIPELINE_*`` variables of a client of ``settings``' Kafka, Elasticsearch and
    database (secrets as :class:`SecretStr`)."""
    kafka, es, database = settings.kafka, settings.elasticsearch, settings.database
    values: dict[str, str | SecretStr | Path | None] = {
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "PIPELINE_KAFKA__SECURITY_PROTOCOL": kafka.security_protocol,
        "PIPELINE_KAFKA__SASL_MECHANISM": kafka.sasl_mechanism,
        "PIPELINE_KAFKA__SASL_USERNAME": kafka.sasl_username,
        "PIPELINE_KAFKA__SASL_PASSWORD": kafka.sasl_password,
        "PIPELINE_KAFKA__SSL_CA_LOCATION": kafka.ssl_ca_location,
        "PIPELINE_ELASTICSEARCH__URL": es.url,
        "PIPELINE_ELASTICSEARCH__USERNAME": es.username,
        "PIPELINE_ELASTICSEARCH__PASSWORD": es.password,
        "PIPELINE_ELASTICSEARCH__CA_CERTS": es.ca_certs,
        "PIPELINE_DATABASE__URL": database.url,
        "PIPELINE_DATABASE__PASSWORD": database.password,
    }
    return {
        name: value if isinstance(value, SecretStr) else str(value)
        for name, value in values.items()
        if value is not None
    }


def env_file_text(settings: PipelineSettings, *, with_secrets: bool) -> str:
    """``NAME=value`` lines (shell-quoted); secrets as a placeholder unless ``with_secrets``."""
    lines = []
    for name, value in client_environment(settings).items():
        if isinstance(value, SecretStr):
            text = value.get_secret_value() if with_secrets else None
            lines.append(f"{name}={shlex.quote(text)}" if text is not None else f"{name}=<secret>")
        else:
            lines.append(f"{name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def librdkafka_properties(kafka: KafkaSettings) -> str:
    """A librdkafka configuration file (``kcat -F``) for ``kafka``, password included."""
    from pipeline.kafka.clients import kafka_common_config

    config = kafka_common_config(kafka)
    config.pop("client.id", None)
    return "".join(f"{key}={value}\n" for key, value in config.items())

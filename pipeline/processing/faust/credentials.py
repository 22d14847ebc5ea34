"""The Faust binding's Kafka security: our Kafka settings as Faust (aiokafka) credentials.

librdkafka takes the settings as configuration strings (:mod:`pipeline.kafka.clients`);
aiokafka, under Faust, wants an :class:`ssl.SSLContext` and Faust's credential objects, made
here from the same settings, so a processor reaches a secured cluster as every other client.
"""

from __future__ import annotations

import ssl

from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from pipeline.errors import PipelineError
from pipeline.settings import KafkaSettings


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """A client TLS context: the CA (else the system's), a client certificate where given;
    the server's certificate and name are checked."""
    try:
        context = ssl.create_default_context(
            cafile=str(kafka.ssl_ca_location) if kafka.ssl_ca_location is not None else None
        )
        if kafka.ssl_certificate_location is not None:
            password = kafka.ssl_key_password
            context.load_cert_chain(
                str(kafka.ssl_certificate_location),
                str(kafka.ssl_key_location) if kafka.ssl_key_location is not None else None,
                password.get_secret_value() if password is not None else None,
            )
    except (OSError, ssl.SSLError) as error:
        # The error names the file or the problem, never the key's password.
        raise PipelineError(f"cannot load the Kafka TLS files: {error}") from None
    return context


def faust_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for ``kafka`` (``None`` for PLAINTEXT)."""
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(kafka) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "SSL":
        assert context is not None
        return SSLCredentials(context)
    assert kafka.sasl_mechanism is not None  # KafkaSettings requires one with SASL
    return SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
        ssl_context=context,
        mechanism=kafka.sasl_mechanism,
    )

"""The Faust binding's Kafka security: our Kafka settings as Faust (aiokafka) credentials.

librdkafka takes the settings as configuration strings (:mod:`pipeline.kafka.clients`);
aiokafka, under Faust, wants an :class:`ssl.SSLContext` and Faust's credential objects, made
here from the same settings, so a processor reaches a secured cluster as every other client.
A TLS file it cannot use is one line naming the file and its setting, as librdkafka's clients
say it.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from pipeline.errors import PipelineError
from pipeline.kafka.clients import kafka_common_config, tls_file_problem
from pipeline.settings import KafkaSettings

_CA = "PIPELINE_KAFKA__SSL_CA_LOCATION"
_CERTIFICATE = "PIPELINE_KAFKA__SSL_CERTIFICATE_LOCATION"
_KEY = "PIPELINE_KAFKA__SSL_KEY_LOCATION"
#: Where in CPython's _ssl.c an SSLError was raised: no part of the reason.
_SOURCE_LINE = re.compile(r"\s*\(_ssl\.c:\d+\)$")


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """A client TLS context: the CA (else the system's), a client certificate where given;
    the server's certificate and name are checked.

    The CA is a PEM file or, as librdkafka takes it too, a folder of hashed certificates
    (OpenSSL's ``c_rehash``/``openssl rehash`` layout), or ``probe`` (the system's). A file
    that is not there or cannot be read is a :class:`PipelineError` naming it and its setting,
    never the key's password."""
    # Each file there and readable, as every librdkafka client checks them (one wording).
    problem = tls_file_problem(kafka_common_config(kafka))
    if problem is not None:
        raise PipelineError(_failed(problem))
    ca = kafka.ssl_ca_location
    if ca is None or str(ca) == "probe":  # librdkafka's "probe": the system's CA locations
        context = ssl.create_default_context()
    else:
        with _reading("the CA certificates", ca, _CA):
            if ca.is_dir():
                context = ssl.create_default_context(capath=str(ca))
            else:
                context = ssl.create_default_context(cafile=str(ca))
    certificate, key = kafka.ssl_certificate_location, kafka.ssl_key_location
    if certificate is not None:
        _check_certificate(certificate)
        password = kafka.ssl_key_password
        try:
            context.load_cert_chain(
                str(certificate),
                str(key) if key is not None else None,
                # Never None: OpenSSL would ask for an encrypted key's password on the terminal.
                password.get_secret_value() if password is not None else "",
            )
        except ssl.SSLError as error:
            raise PipelineError(_key_refusal(error, certificate, key)) from None
        except OSError as error:
            raise _unreadable("the key", key or certificate, _KEY, error) from None
    return context


def _check_certificate(path: Path) -> None:
    """Refuse a client certificate file that holds no PEM certificate, so that what
    load_cert_chain then refuses is the key's."""
    with _reading("the client certificate", path, _CERTIFICATE):
        ssl.create_default_context().load_verify_locations(cafile=str(path))


def _key_refusal(error: ssl.SSLError, certificate: Path, key: Path | None) -> str:
    reason = _reason(error)
    if "KEY_VALUES_MISMATCH" in str(error):
        return _failed(
            f"the key at {key} is not the key of the certificate at {certificate} "
            f"({_KEY}, {_CERTIFICATE})"
        )
    return _failed(
        f"the key at {key} ({_KEY}) cannot be read: a missing or wrong "
        f"PIPELINE_KAFKA__SSL_KEY_PASSWORD, or not a PEM private key ({reason})"
    )


@contextmanager
def _reading(what: str, path: Path, setting: str) -> Iterator[None]:
    """Turn OpenSSL's and the system's refusal of ``path`` into one line naming it and
    ``setting``."""
    try:
        yield
    except FileNotFoundError:
        raise PipelineError(_failed(f"no file at {path} ({setting})")) from None
    except ssl.SSLError as error:
        raise PipelineError(
            _failed(f"{what} at {path} ({setting}) cannot be read: {_reason(error)}")
        ) from None
    except OSError as error:
        raise _unreadable(what, path, setting, error) from None


def _unreadable(what: str, path: Path, setting: str, error: OSError) -> PipelineError:
    why = error.strerror or str(error)
    return PipelineError(_failed(f"{what} at {path} ({setting}) cannot be read: {why}"))


def _reason(error: ssl.SSLError) -> str:
    return _SOURCE_LINE.sub("", str(error))


def _failed(detail: str) -> str:
    return f"cannot load the Kafka TLS files: {detail}"


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

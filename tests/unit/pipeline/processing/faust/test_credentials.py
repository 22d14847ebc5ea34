"""Our Kafka security settings as the Faust runtime's (aiokafka's) credentials."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr

from pipeline.errors import PipelineError
from pipeline.processing.faust.credentials import faust_credentials, ssl_context
from pipeline.settings import KafkaSettings
from pipeline.stack.certificates import ensure_certificates


def test_plaintext_needs_no_credentials():
    assert faust_credentials(KafkaSettings()) is None


def test_sasl_ssl_is_scram_over_a_context_that_trusts_the_ca_and_checks_the_name(tmp_path):
    ca = ensure_certificates(tmp_path).ca_certificate
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SecretStr("hunter2"),
        ssl_ca_location=ca,
    )
    credentials = faust_credentials(kafka)
    assert isinstance(credentials, SASLCredentials)
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("svc", "hunter2")
    context = auth["ssl_context"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert any("pipeline local CA" in str(cert["subject"]) for cert in context.get_ca_certs())
    assert "hunter2" not in repr(credentials)


def test_sasl_plaintext_has_no_tls_and_ssl_alone_is_mutual_tls(tmp_path):
    sasl = faust_credentials(
        KafkaSettings(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username="svc",
            sasl_password=SecretStr("pw"),
        )
    )
    assert credentials_to_aiokafka_auth(sasl)["security_protocol"] == "SASL_PLAINTEXT"
    files = ensure_certificates(tmp_path)
    mutual = faust_credentials(
        KafkaSettings(
            security_protocol="SSL",
            ssl_ca_location=files.ca_certificate,
            ssl_certificate_location=files.server_certificate,
            ssl_key_location=files.server_key,
        )
    )
    assert isinstance(mutual, SSLCredentials)
    assert credentials_to_aiokafka_auth(mutual)["security_protocol"] == "SSL"


def test_an_unreadable_tls_file_is_one_error_naming_it(tmp_path):
    missing = tmp_path / "nope.crt"
    with pytest.raises(PipelineError, match="cannot load the Kafka TLS files") as error:
        faust_credentials(KafkaSettings(security_protocol="SSL", ssl_ca_location=missing))
    assert error.value.__cause__ is None


def _handshake(client: ssl.SSLContext, files_folder: Path) -> None:
    """A TLS handshake in memory between ``client`` and a server presenting the local CA's
    server certificate for ``localhost``; raises what the client's checks refuse."""
    files = ensure_certificates(files_folder)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.server_certificate, files.server_key)
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(to_client, to_server, server_hostname="localhost")
    server_end = server.wrap_bio(to_server, to_client, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, end in (("client", client_end), ("server", server_end)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl rehash")
def test_a_ca_folder_of_hashed_certificates_is_trusted_as_librdkafka_trusts_it(
    tmp_path: Path,
) -> None:
    # OpenSSL's hashed CA folder (c_rehash): librdkafka's commands took it, `pipeline process`
    # said "[Errno 21] Is a directory".
    files = ensure_certificates(tmp_path / "certs")
    folder = tmp_path / "ca.d"
    folder.mkdir()
    shutil.copy(files.ca_certificate, folder / "pipeline-ca.pem")
    subprocess.run(["openssl", "rehash", str(folder)], check=True, capture_output=True)

    credentials = faust_credentials(KafkaSettings(security_protocol="SSL", ssl_ca_location=folder))

    assert isinstance(credentials, SSLCredentials)
    context = credentials_to_aiokafka_auth(credentials)["ssl_context"]
    _handshake(context, tmp_path / "certs")  # the server's certificate is trusted through it


def test_a_ca_folder_without_the_servers_ca_does_not_trust_the_server(tmp_path: Path) -> None:
    folder = tmp_path / "empty-ca.d"
    folder.mkdir()

    context = ssl_context(KafkaSettings(security_protocol="SSL", ssl_ca_location=folder))

    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(context, tmp_path / "certs")


def test_librdkafkas_probe_is_the_systems_cas_as_for_librdkafka() -> None:
    context = ssl_context(KafkaSettings(security_protocol="SSL", ssl_ca_location="probe"))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def _refusal(**tls: Any) -> str:
    with pytest.raises(PipelineError) as refused:
        ssl_context(KafkaSettings(security_protocol="SSL", **tls))
    assert refused.value.__cause__ is None
    return str(refused.value)


def test_every_tls_file_refused_names_the_file_and_its_setting(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    missing = tmp_path / "missing.crt"

    assert _refusal(ssl_ca_location=missing) == (
        f"cannot load the Kafka TLS files: no file at {missing} (PIPELINE_KAFKA__SSL_CA_LOCATION)"
    )
    said = _refusal(ssl_ca_location=not_pem)
    assert said.startswith(
        f"cannot load the Kafka TLS files: the CA certificates at {not_pem} "
        "(PIPELINE_KAFKA__SSL_CA_LOCATION) cannot be read: "
    )
    pair = {"ssl_certificate_location": files.server_certificate, "ssl_key_location": missing}
    assert _refusal(**pair).endswith(f"no file at {missing} (PIPELINE_KAFKA__SSL_KEY_LOCATION)")
    pair = {"ssl_certificate_location": tmp_path, "ssl_key_location": files.server_key}
    assert _refusal(**pair).endswith(
        f"no file at {tmp_path} (PIPELINE_KAFKA__SSL_CERTIFICATE_LOCATION)"
    )
    pair = {"ssl_certificate_location": not_pem, "ssl_key_location": files.server_key}
    assert (
        f"the client certificate at {not_pem} (PIPELINE_KAFKA__SSL_CERTIFICATE_LOCATION) "
        "cannot be read: " in _refusal(**pair)
    )
    pair = {"ssl_certificate_location": files.server_certificate, "ssl_key_location": not_pem}
    assert (
        f"the key at {not_pem} (PIPELINE_KAFKA__SSL_KEY_LOCATION) cannot be read: a "
        "missing or wrong PIPELINE_KAFKA__SSL_KEY_PASSWORD, or not a PEM private key"
        in _refusal(**pair)
    )
    pair = {"ssl_certificate_location": files.ca_certificate, "ssl_key_location": files.server_key}
    assert _refusal(**pair).endswith(
        f"the key at {files.server_key} is not the key of the certificate at "
        f"{files.ca_certificate} (PIPELINE_KAFKA__SSL_KEY_LOCATION, "
        "PIPELINE_KAFKA__SSL_CERTIFICATE_LOCATION)"
    )


def test_an_encrypted_key_without_its_password_is_refused_not_asked_for(tmp_path: Path) -> None:
    # Without a password OpenSSL asked for one on the terminal (a processor waiting on it).
    files = ensure_certificates(tmp_path)
    key = serialization.load_pem_private_key(files.server_key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret-pw"),
        )
    )
    pair = {"ssl_certificate_location": files.server_certificate, "ssl_key_location": encrypted}

    said = _refusal(**pair)

    assert f"the key at {encrypted} (PIPELINE_KAFKA__SSL_KEY_LOCATION) cannot be read" in said
    assert isinstance(
        ssl_context(
            KafkaSettings(security_protocol="SSL", ssl_key_password=SecretStr("s3cret-pw"), **pair)
        ),
        ssl.SSLContext,
    )

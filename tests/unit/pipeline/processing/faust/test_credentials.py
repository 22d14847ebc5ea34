"""Our Kafka security settings as the Faust runtime's (aiokafka's) credentials."""

from __future__ import annotations

import ssl

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr

from pipeline.errors import PipelineError
from pipeline.processing.faust.credentials import faust_credentials
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

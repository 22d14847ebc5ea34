"""librdkafka's log lines about a refused login or TLS handshake, as the admin reports them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.kafka.clients import build_admin, security_failure_of
from pipeline.settings import KafkaSettings
from pipeline.stack.certificates import ensure_certificates

PREFIX = "FAIL [thrd:sasl_ssl://127.0.0.1:9102/bootstrap]: sasl_ssl://127.0.0.1:9102/bootstrap: "


@pytest.mark.parametrize(
    ("line", "failure"),
    [
        (
            PREFIX + "SASL authentication error: Authentication failed during authentication due "
            "to invalid credentials with SASL mechanism SCRAM-SHA-512 (after 332ms in state "
            "AUTH_REQ)",
            "SASL authentication error: Authentication failed during authentication due to "
            "invalid credentials with SASL mechanism SCRAM-SHA-512",
        ),
        (
            PREFIX + "SSL handshake failed: error:0A000086:SSL routines::certificate verify "
            "failed: broker certificate could not be verified (after 3ms in state SSL_HANDSHAKE)",
            "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: "
            "broker certificate could not be verified",
        ),
        (
            PREFIX + "error:0A000086:SSL routines::certificate verify failed (after 4ms in state "
            "SSL_HANDSHAKE)",
            "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed",
        ),
        (  # a listener that wants a client certificate, not knowing whether one was set
            PREFIX + "SSL handshake failed: error:0A000412:SSL routines::ssl/tls alert bad "
            "certificate: SSL alert number 42 (after 2ms in state SSL_HANDSHAKE)",
            "SSL handshake failed: error:0A000412:SSL routines::ssl/tls alert bad certificate: "
            "SSL alert number 42; the listener wants a client certificate it trusts: set "
            "PIPELINE_KAFKA__SSL_CERTIFICATE_LOCATION and PIPELINE_KAFKA__SSL_KEY_LOCATION if "
            "none is set (or is this a KRaft controller's port rather than a broker's?)",
        ),
        (
            PREFIX + "SASL PLAIN mechanism handshake failed: Broker: Request not valid in "
            "current SASL state: broker's supported mechanisms:  (after 0ms in state "
            "AUTH_HANDSHAKE)",
            "SASL PLAIN handshake failed: this listener takes no SASL; is "
            "PIPELINE_KAFKA__SECURITY_PROTOCOL right?",
        ),
        (
            PREFIX + "SASL PLAIN mechanism handshake failed: Broker: Unsupported SASL "
            "mechanism: broker's supported mechanisms: SCRAM-SHA-512 (after 1ms in state "
            "AUTH_HANDSHAKE)",
            "SASL handshake failed: the broker offers SCRAM-SHA-512, not PLAIN "
            "(PIPELINE_KAFKA__SASL_MECHANISM)",
        ),
        (PREFIX + "Connect to ipv4#127.0.0.1:9102 failed: Connection refused", None),
    ],
)
def test_a_refused_login_or_handshake_is_found_and_anything_else_is_not(line, failure):
    assert security_failure_of(line) == failure


BAD_CERTIFICATE = (
    PREFIX + "SSL handshake failed: error:0A000412:SSL routines::ssl/tls alert bad certificate: "
    "SSL alert number 42 (after 2ms in state SSL_HANDSHAKE)"
)
ALERT = "SSL handshake failed: error:0A000412:SSL routines::ssl/tls alert bad certificate: SSL "


def test_a_listener_wanting_a_certificate_from_a_client_without_one_names_the_settings() -> None:
    # An SSL client with no certificate at a listener requiring one was asked whether it was
    # at a KRaft controller's port, not told to set its certificate.
    assert security_failure_of(BAD_CERTIFICATE, client_certificate=False) == (
        ALERT + "alert number 42; the listener requires a client certificate: set "
        "PIPELINE_KAFKA__SSL_CERTIFICATE_LOCATION and PIPELINE_KAFKA__SSL_KEY_LOCATION (unless "
        "this is a KRaft controller's port rather than a broker's)"
    )


def test_a_listener_refusing_the_clients_certificate_asks_about_the_controllers_port() -> None:
    # The KRaft controller's listener, which takes only the node's own certificate.
    assert security_failure_of(BAD_CERTIFICATE, client_certificate=True) == (
        ALERT + "alert number 42; the listener does not trust the client certificate of "
        "PIPELINE_KAFKA__SSL_CERTIFICATE_LOCATION (is it signed by a CA of the broker's "
        "truststore? or is this a KRaft controller's port rather than a broker's?)"
    )


def test_the_admin_client_tells_the_hint_whether_it_has_a_certificate(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path)
    # Nothing listens there: the only security failure either client sees is the one below.
    tls = {"bootstrap_servers": "127.0.0.1:1", "security_protocol": "SSL"}
    without = build_admin(KafkaSettings(**tls, ssl_ca_location=files.ca_certificate))
    with_one = build_admin(
        KafkaSettings(
            **tls,
            ssl_ca_location=files.ca_certificate,
            ssl_certificate_location=files.server_certificate,
            ssl_key_location=files.server_key,
        )
    )
    for admin in (without, with_one):
        admin._log.log(3, BAD_CERTIFICATE)  # what librdkafka hands its logger

    assert without.security_failure == security_failure_of(
        BAD_CERTIFICATE, client_certificate=False
    )
    assert with_one.security_failure == security_failure_of(
        BAD_CERTIFICATE, client_certificate=True
    )

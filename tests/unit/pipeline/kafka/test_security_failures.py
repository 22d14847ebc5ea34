"""librdkafka's log lines about a refused login or TLS handshake, as the admin reports them."""

from __future__ import annotations

import pytest

from pipeline.kafka.clients import security_failure_of

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
        (  # the KRaft controller's listener, which takes only the node's own certificate
            PREFIX + "SSL handshake failed: error:0A000412:SSL routines::ssl/tls alert bad "
            "certificate: SSL alert number 42 (after 2ms in state SSL_HANDSHAKE)",
            "SSL handshake failed: error:0A000412:SSL routines::ssl/tls alert bad certificate: "
            "SSL alert number 42; the listener wants a client certificate it trusts (is this a "
            "KRaft controller's port rather than a broker's?)",
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

"""Elasticsearch refusing our credentials or its certificate: one line that says which."""

from __future__ import annotations

import ssl

from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import AuthenticationException, NotFoundError, SSLError

from pipeline.logs.elasticsearch import refusal_of


def _meta(status: int) -> ApiResponseMeta:
    return ApiResponseMeta(
        status=status,
        http_version="1.1",
        headers=HttpHeaders(),
        duration=0.0,
        node=NodeConfig("https", "127.0.0.1", 9210),
    )


def test_a_401_names_the_settings_to_check():
    reason = "unable to authenticate user [pipeline] for REST request [/_cluster/health]"
    error = AuthenticationException(
        message="security_exception", meta=_meta(401), body={"error": {"reason": reason}}
    )
    assert refusal_of(error) == (
        f"Elasticsearch refused the credentials (401: {reason}); check "
        "PIPELINE_ELASTICSEARCH__USERNAME and __PASSWORD (or __API_KEY)"
    )


def test_an_untrusted_certificate_names_the_ca_setting():
    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed")
    error = SSLError("TLS error", errors=(cause,))
    assert refusal_of(error) == (
        "the TLS handshake with Elasticsearch failed (TLS error caused by: "
        "SSLCertVerificationError([SSL: CERTIFICATE_VERIFY_FAILED] self-signed)); "
        "check PIPELINE_ELASTICSEARCH__URL and __CA_CERTS"
    )


def test_other_errors_are_not_refusals():
    assert refusal_of(NotFoundError(message="index_not_found", meta=_meta(404), body={})) is None
    assert refusal_of(ValueError("x")) is None


def test_the_https_hint_needs_a_hang_up_on_http_and_a_port_that_speaks_tls(monkeypatch):
    # A hang-up alone is an outage as often (a server or a proxy's that went away): the port
    # is asked for a TLS handshake (test_elasticsearch_not_reached.py, against real sockets).
    from elasticsearch import ConnectionError as EsConnectionError

    from pipeline.logs import elasticsearch as module

    hung_up = EsConnectionError(
        "Connection error caused by: ConnectionError(('Connection aborted.', "
        "RemoteDisconnected('Remote end closed connection without response')))"
    )
    refused = EsConnectionError("Failed to establish a new connection: Connection refused")
    asked: list[str] = []

    def speaks_tls(url: str, timeout_s: float = 3.0) -> bool:
        asked.append(url)
        return url.endswith(":9210")

    monkeypatch.setattr(module, "_speaks_tls", speaks_tls)

    assert "https://" in module.plain_http_hint("http://127.0.0.1:9210", hung_up)
    assert module.plain_http_hint("http://127.0.0.1:9200", hung_up) == ""  # no TLS there
    assert asked == ["http://127.0.0.1:9210", "http://127.0.0.1:9200"]
    assert module.plain_http_hint("https://127.0.0.1:9210", hung_up) == ""
    assert module.plain_http_hint("http://127.0.0.1:9210", refused) == ""
    assert len(asked) == 2  # neither of those asks the port

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


def test_a_plain_http_url_whose_server_hangs_up_at_once_gets_the_https_hint():
    from elasticsearch import ConnectionError as EsConnectionError

    from pipeline.logs.elasticsearch import plain_http_hint

    hung_up = EsConnectionError(
        "Connection error caused by: ConnectionError(('Connection aborted.', "
        "RemoteDisconnected('Remote end closed connection without response')))"
    )
    refused = EsConnectionError("Failed to establish a new connection: Connection refused")

    assert "https://" in plain_http_hint("http://127.0.0.1:9210", hung_up)
    assert plain_http_hint("https://127.0.0.1:9210", hung_up) == ""
    assert plain_http_hint("http://127.0.0.1:9200", refused) == ""

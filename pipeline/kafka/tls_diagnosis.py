"""Why a broker's TLS certificate was not accepted, in OpenSSL's precise words.

librdkafka reports every failed check of a broker's certificate alike: "certificate verify
failed: broker certificate could not be verified, verify that ssl.ca.location is correctly
configured ...", which sends the user to the CA even when the CA is right and the certificate
names another host. Python's :mod:`ssl` (the same OpenSSL) says which check failed; it is asked
only once a handshake has failed, with the client's own CA and host name check.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Mapping
from typing import Any

__all__ = ["certificate_refusal"]


def certificate_refusal(config: Mapping[str, Any], timeout_s: float = 3.0) -> str | None:
    """Why a bootstrap broker's certificate fails the checks of a librdkafka client ``config``
    (``ssl.ca.location``, host name check on unless ``ssl.endpoint.identification.algorithm``
    is ``none``), e.g. ``IP address mismatch, certificate is not valid for '127.0.0.1'``: the
    first broker of the list whose certificate fails says it (librdkafka tries them all);
    ``None`` when every one passes or none can be asked."""
    if str(config.get("security.protocol", "")).upper() not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context()
    ca = config.get("ssl.ca.location")
    try:
        if ca and ca != "probe":
            if os.path.isdir(str(ca)):
                context.load_verify_locations(capath=str(ca))
            else:
                context.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError):
        return None  # librdkafka's own error says what is wrong with the file
    if str(config.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
        context.check_hostname = False
    for server in str(config.get("bootstrap.servers", "")).split(",")[:_BROKERS_ASKED]:
        host, _, port = server.strip().rpartition(":")
        host = host.strip("[]")  # an IPv6 address in brackets
        if host and port.isdigit():
            why = _refusal_of(context, host, int(port), timeout_s)
            if why is not None:
                return why
    return None


#: At most this many bootstrap brokers are asked (each up to the timeout, after a failure).
_BROKERS_ASKED = 5


def _refusal_of(context: ssl.SSLContext, host: str, port: int, timeout_s: float) -> str | None:
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return None
    except ssl.SSLCertVerificationError as refused:
        return _with_the_setting(str(refused.verify_message).rstrip(".")) or None
    except (OSError, ValueError):
        return None  # not reachable now, or another TLS failure: nothing more precise to say


def _with_the_setting(reason: str) -> str:
    """OpenSSL's reason, with the setting that decides it."""
    if not reason:
        return reason
    if "mismatch" in reason:
        return (
            f"{reason} (the broker's address in PIPELINE_KAFKA__BOOTSTRAP_SERVERS must be one "
            "its certificate names)"
        )
    if "issuer" in reason or "self-signed" in reason or "self signed" in reason:
        return f"{reason} (is PIPELINE_KAFKA__SSL_CA_LOCATION the CA that signed it?)"
    return reason

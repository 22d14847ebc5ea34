"""The Elasticsearch client, built here from settings and passed in elsewhere.

:func:`elasticsearch_options` is pure (settings in, client keyword arguments out); the client
opens no connection until first used.
"""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.errors import PipelineError
from pipeline.logs.redact import redact
from pipeline.settings import ElasticsearchSettings, masked_url

if TYPE_CHECKING:  # imported when a client is built: `pipeline --help` need not load it
    from elasticsearch import ApiError, Elasticsearch


def elasticsearch_options(es: ElasticsearchSettings) -> dict[str, Any]:
    """Keyword arguments for :class:`elasticsearch.Elasticsearch`."""
    options: dict[str, Any] = {"hosts": [es.url], "request_timeout": es.request_timeout_s}
    if es.api_key is not None:
        options["api_key"] = es.api_key.get_secret_value()
    elif es.username is not None:
        password = es.password.get_secret_value() if es.password is not None else ""
        options["basic_auth"] = (es.username, password)
    if es.ca_certs is not None:
        options["ca_certs"] = str(es.ca_certs)
    return options


def build_elasticsearch(es: ElasticsearchSettings) -> Elasticsearch:
    """The client; :class:`PipelineError` naming the setting when its CA file is not there
    (the TLS library's own words are ``No such file or directory``, without the path)."""
    from elasticsearch import Elasticsearch

    if es.ca_certs is not None and not es.ca_certs.is_file():
        raise PipelineError(
            f"PIPELINE_ELASTICSEARCH__CA_CERTS: no file at {es.ca_certs.absolute()} (the CA "
            "certificate that signed Elasticsearch's, in PEM)"
        )
    return Elasticsearch(**elasticsearch_options(es))


def refusal_of(error: BaseException) -> str | None:
    """One line for Elasticsearch refusing our credentials (401), a privilege (403), or a
    failed TLS handshake; ``None`` for any other error. Never holds a password: Elasticsearch
    names the user only, and the TLS error names the certificate problem."""
    from elasticsearch import AuthenticationException, AuthorizationException, SSLError

    if isinstance(error, AuthenticationException):
        return (
            f"Elasticsearch refused the credentials ({_reason(error)}); check "
            "PIPELINE_ELASTICSEARCH__USERNAME and __PASSWORD (or __API_KEY)"
        )
    if isinstance(error, AuthorizationException):
        return f"Elasticsearch denied the request ({_reason(error)}): the user lacks a privilege"
    if isinstance(error, SSLError):
        return (
            f"the TLS handshake with Elasticsearch failed ({' '.join(str(error).split())}); "
            "check PIPELINE_ELASTICSEARCH__URL and __CA_CERTS"
        )
    return None


#: How long :func:`refuse_an_https_port_over_http` waits for an answer, and
#: :func:`plain_http_hint` for a TLS handshake.
HANG_UP_CHECK_S = 3.0

#: :func:`plain_http_hint`'s words, for a port shown to be an HTTPS one.
_HTTPS_PORT_HINT = (
    " (the server closed the connection at once: an HTTPS port? then "
    "PIPELINE_ELASTICSEARCH__URL starts with https://)"
)


def hung_up(url: str, error: BaseException) -> bool:
    """Whether the server of a plain ``http://`` URL closed the connection without an answer:
    an HTTPS port does so (Elasticsearch with TLS closes a plain HTTP connection without a
    word), and so do an Elasticsearch going away and a proxy whose Elasticsearch is down."""
    text = str(getattr(error, "message", "")) + " " + str(error)
    return url.lower().startswith("http://") and (
        "RemoteDisconnected" in text or "Connection aborted" in text
    )


def plain_http_hint(url: str, error: BaseException) -> str:
    """A hint for a plain ``http://`` URL whose server hung up (:func:`hung_up`) and whose port
    completes a TLS handshake (asked at once, for up to :data:`HANG_UP_CHECK_S`): an HTTPS
    port; else ``""``. A hang-up alone is no evidence: the hint once sent a user looking at
    TLS while the server, or a proxy's, was away."""
    if hung_up(url, error) and _speaks_tls(url, HANG_UP_CHECK_S):
        return _HTTPS_PORT_HINT
    return ""


def unanswered(url: str, timeout_s: float) -> str:
    """One line for a request Elasticsearch did not answer within the client's request timeout
    (elastic-transport's ``ConnectionTimeout``: a server that accepted the connection and never
    answered, or a host that never completed it), naming the URL without its credentials."""
    return (
        f"Elasticsearch at {masked_url(url)} did not answer within {timeout_s:g} s "
        "(PIPELINE_ELASTICSEARCH__REQUEST_TIMEOUT_S)"
    )


def refuse_an_https_port_over_http(es: Elasticsearch, url: str) -> None:
    """A :class:`PipelineError` at once for an ``http://`` URL whose server hangs up without a
    word and answers a TLS handshake (an HTTPS port), which no wait would mend: the shipper
    waited for it for ever, as for an outage. Any other trouble is left to the caller (the
    shipper waits out an Elasticsearch that is away, or a proxy in front of one that hangs
    up); a server that does not answer within :data:`HANG_UP_CHECK_S` is no HTTPS port."""
    from elasticsearch import ConnectionError as EsConnectionError

    try:
        # Briefly: such a port hangs up at once, and an Elasticsearch that stalls (accepts,
        # never answers) kept the shipper out of its group, and its metrics unserved, for the
        # whole request timeout (30 s) before the template's own 30 s.
        es.options(request_timeout=HANG_UP_CHECK_S, max_retries=0).info()
    except EsConnectionError as error:
        # A hang-up alone may be a proxy whose Elasticsearch is down (an outage to wait out):
        # only a port that answers a TLS handshake is taken for an HTTPS one.
        hint = plain_http_hint(url, error)
        if hint:
            raise PipelineError(f"cannot reach Elasticsearch at {masked_url(url)}{hint}") from None
    except Exception:  # the caller's own handling says what it is
        pass


def _speaks_tls(url: str, timeout_s: float = 3.0) -> bool:
    """Whether the host and port of ``url`` complete a TLS handshake (any certificate); never
    raises (it is asked while an error is being told)."""
    import socket
    import ssl
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or 80
    except ValueError:
        return False
    if host is None:
        return False
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only whether it speaks TLS at all
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except Exception:  # OSError, ssl.SSLError, ValueError (a host name IDNA refuses)...
        return False


#: How much of a foreign server's answer :func:`not_elasticsearch` quotes.
_QUOTED_CHARS = 120


def not_elasticsearch(url: str, status: int | None, body: Any) -> str | None:
    """One line for an error answer that is not Elasticsearch's own error object (``{"error":
    {"type": ..., "reason": ...}}``): the URL points elsewhere (a path after the host makes
    Elasticsearch answer ``no handler found for uri``; another HTTP server answers HTML, or
    nothing). ``None`` for Elasticsearch's own errors. Such an answer once read
    ``bad query: None``, sending the user to their query rather than the URL. ``status``:
    ``None`` when it is not known (:func:`foreign_answer`)."""
    detail = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(detail, Mapping) and (detail.get("type") or detail.get("reason")):
        return None
    if isinstance(detail, str):  # Elasticsearch's own, for a path it has no handler for
        text = detail
    elif isinstance(body, bytes):
        text = body.decode("utf-8", "replace")
    elif body is None or isinstance(body, str):
        text = body or ""
    else:
        text = json.dumps(body, default=str)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else "an empty answer"
    if len(first) > _QUOTED_CHARS:
        first = first[:_QUOTED_CHARS] + "..."
    said = first if status is None else f"{status}: {first}"
    where = f"the server at {redact(url)}" if url else "the server at PIPELINE_ELASTICSEARCH__URL"
    return (
        f"{where} did not answer as Elasticsearch ({said}); "
        "check PIPELINE_ELASTICSEARCH__URL (Elasticsearch's address, without a path)"
    )


def foreign_answer(url: str, error: BaseException) -> str | None:
    """:func:`not_elasticsearch`'s line for an answer the client could not read as JSON
    (elastic-transport's ``SerializationError``) that is no JSON object at all: a server that
    is not Elasticsearch answered without a content type (a Prometheus metrics port answers
    ``# HTTP 405 Method Not Allowed``, which the client takes for JSON, Elasticsearch's
    default). ``None`` when the answer starts as a JSON object, as Elasticsearch's all do (one
    of its documents may still be unreadable: ``pipeline.logs.search.unreadable_answer``)."""
    errors = getattr(error, "errors", ()) or ()
    causes = [*(errors if isinstance(errors, tuple) else ()), error.__cause__, error.__context__]
    text: str | None = None
    for cause in causes:
        if isinstance(cause, json.JSONDecodeError):
            text = cause.doc
        elif isinstance(cause, UnicodeDecodeError):  # not UTF-8 (nor UTF-16 or -32) at all
            text = cause.object.decode("utf-8", "replace")
        if text is not None:
            break
    if text is None or text.lstrip(" \t\r\n\ufeff").startswith("{"):
        return None
    return not_elasticsearch(url, None, text)


def unreadable(url: str, error: BaseException) -> str:
    """One line for an answer the client could not read (``SerializationError``, whose own
    message holds the whole answer): :func:`foreign_answer`'s, else that it is not JSON."""
    foreign = foreign_answer(url, error)
    if foreign is not None:
        return foreign
    where = redact(url) if url else "PIPELINE_ELASTICSEARCH__URL"
    return (
        f"the answer of the server at {where} is not valid JSON, as Elasticsearch's are; "
        "check PIPELINE_ELASTICSEARCH__URL (Elasticsearch's address, without a path)"
    )


def _reason(error: Any) -> str:
    body = getattr(error, "body", None)
    detail = body.get("error") if isinstance(body, dict) else None
    reason = detail.get("reason") if isinstance(detail, dict) else None
    return f"{getattr(error, 'status_code', '?')}: {reason or getattr(error, 'message', error)}"


def template_refusal(error: ApiError) -> str:
    """One line for Elasticsearch refusing the logs' index template (an overlapping template of
    the same priority, say, for an alias that extends another's: ``pipeline-logs-staging``)."""
    return (
        f"Elasticsearch refused the index template ({error.meta.status}): {one_line_reason(error)}"
    )


def one_line_reason(error: ApiError) -> str:
    """Elasticsearch's reason for a refused request, on one line: what failed, and why (the
    first reason of its chain and the last, innermost one)."""
    body = error.body if isinstance(error.body, Mapping) else {}
    detail = body.get("error")
    if isinstance(detail, Mapping):
        shards = detail.get("failed_shards") or []
        node: Any = shards[0].get("reason") if shards and isinstance(shards[0], Mapping) else None
        reason = reason_of(node if isinstance(node, Mapping) else detail)
        if reason is not None:
            return reason
    return " ".join(str(error.message).split())


def reason_of(node: Any) -> str | None:
    """An Elasticsearch error object's reason on one line: the first reason of its
    ``caused_by`` chain and the last, innermost one; ``None`` when it gives none."""
    chain: list[str] = []
    while isinstance(node, Mapping):
        if node.get("reason"):
            chain.append(str(node["reason"]))
        node = node.get("caused_by")
    if not chain:
        return None
    text = chain[0] if len(chain) == 1 else f"{chain[0]}: {chain[-1]}"
    return " ".join(text.split())


def unreachable(url: str, error: BaseException, waited_s: float) -> str:
    """One line for Elasticsearch not reached (elastic-transport's ``ConnectionError``, or its
    ``ConnectionTimeout``: :func:`unanswered`), naming the URL without its credentials and
    saying why in a few words (``connection refused``). ``waited_s``: how long ago the request
    was sent. The client's own text was a chain of three exceptions' reprs (``Connection error
    caused by: ConnectionError(Connection error caused by: NewConnectionError(...)))``)."""
    from elastic_transport import ConnectionTimeout

    if isinstance(error, ConnectionTimeout):  # a tenth of a second for a short timeout
        return unanswered(url, float(round(waited_s, 1 if waited_s < 10 else None)))
    return f"cannot reach Elasticsearch at {masked_url(url)} ({_not_reached_because(error)})"


def not_reached(url: str, error: BaseException) -> str:
    """One line for a connection to Elasticsearch that failed (elastic-transport's
    ``ConnectionError``; not a timeout: :func:`unanswered`), as :func:`unreachable` says it:
    ``cannot reach Elasticsearch at URL (connection refused)``, the URL without its
    credentials. An ``http://`` URL whose server hung up gets :func:`plain_http_hint`'s
    reason instead where its port speaks TLS (an HTTPS port), else :func:`unreachable`'s (``the
    connection was closed without an answer``: a server or a proxy's that went away). The
    client's own text was
    ``elasticsearch is unreachable: HTTPConnection(host=..., port=...): Failed to establish a
    new connection: [Errno 111] Connection refused``."""
    hint = plain_http_hint(url, error)
    if hint:
        return f"cannot reach Elasticsearch at {masked_url(url)}{hint}"
    return unreachable(url, error, 0.0)


#: Why a connection failed, by the operating system's error at its root.
_OS_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "the connection was closed without an answer"),
    (ConnectionAbortedError, "the connection was closed without an answer"),
    (BrokenPipeError, "the connection was closed without an answer"),
    (TimeoutError, "connecting timed out"),
)
_ERRNO_REASONS = {
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
}
_REASON_CHARS = 160


def _not_reached_because(error: BaseException) -> str:
    causes = list(_causes(error))
    for cause in causes:
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        for kind, reason in _OS_REASONS:
            if isinstance(cause, kind):
                return reason
        if isinstance(cause, OSError) and cause.errno in _ERRNO_REASONS:
            return _ERRNO_REASONS[cause.errno]
    text = " ".join(str(causes[-1]).split()) or type(causes[-1]).__name__
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS] + "..."


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and what caused it (the errors of the client's earlier attempts, the
    exceptions each was raised from), outermost first."""
    found: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        earlier = getattr(current, "errors", ())
        pending += [
            e
            for e in (earlier if isinstance(earlier, tuple) else ())
            if isinstance(e, BaseException)
        ]
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return found

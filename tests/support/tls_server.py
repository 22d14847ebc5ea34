"""A TLS server of a test's own: enough for a client's handshake, and for one that speaks plain
HTTP to it (the server hangs up, as an HTTPS port does)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.stack.certificates import ensure_certificates


@contextmanager
def tls_server(folder: Path, host: str = "127.0.0.1") -> Iterator[tuple[str, Path]]:
    """A TLS server on ``host`` whose certificate names localhost and 127.0.0.1 only; its
    ``host:port`` and the CA that signed its certificate. Each connection gets a handshake
    and is closed."""
    files = ensure_certificates(folder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.server_certificate, files.server_key)
    listener = socket.create_server((host, 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                connection.settimeout(2)
                with context.wrap_socket(connection, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass  # the client turned the certificate down, or spoke no TLS
            finally:
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"{host}:{listener.getsockname()[1]}", files.ca_certificate
    finally:
        stop.set()
        thread.join(5)
        listener.close()

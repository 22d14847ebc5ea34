"""A server on 127.0.0.1 that accepts every connection and never answers: a stalled
Elasticsearch or Kibana (what ``kill -STOP`` of one looks like to its clients)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["silent_server"]


@contextmanager
def silent_server() -> Iterator[int]:
    """The port of a server that accepts every connection and never answers, until exit."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()
        for connection in held:
            connection.close()

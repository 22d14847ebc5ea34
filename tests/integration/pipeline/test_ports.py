import socket

import pytest

from pipeline import ports
from pipeline.ports import free_ports, listening_range


def test_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)

    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))


def test_ports_come_from_below_the_ephemeral_range_on_linux() -> None:
    below = listening_range()
    ports = free_ports(3)

    if below:  # Linux: none from the range that outgoing connections draw from
        assert all(port in below for port in ports)
    assert all(1024 <= port < 65536 for port in ports)


def test_a_taken_port_is_never_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    taken_port, free_port = free_ports(2)
    monkeypatch.setattr(ports, "listening_range", lambda: [taken_port, free_port])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", taken_port))

        offered = [port for _ in range(10) for port in ports.free_ports(1)]

        assert offered == [free_port] * 10

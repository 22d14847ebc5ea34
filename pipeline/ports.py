"""Free local ports for the servers we start (demo services, test stacks)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

#: Linux's range of ports for outgoing connections.
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def listening_range() -> range:
    """Ports below the ephemeral range, where no outgoing connection takes one.

    A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, so between the
    probe and the server's own bind, any client connection on a busy machine may take it (seen:
    a test's Kafka failing with "Address already in use"). Empty off Linux.
    """
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(0)
    return range(max(1024, low - 12_000), low)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports on ``host``, below the ephemeral range where there is one:
    every probe stays bound until all are chosen, so no two are the same."""
    candidates = listening_range()
    probes: list[socket.socket] = []
    try:
        for _ in range(20 * count):
            if len(probes) == count or not candidates:
                break
            probe = socket.socket()
            try:
                probe.bind((host, random.choice(candidates)))
            except OSError:  # taken: another
                probe.close()
                continue
            probes.append(probe)
        while len(probes) < count:  # no range, or too many taken: whatever the kernel gives
            probe = socket.socket()
            probe.bind((host, 0))
            probes.append(probe)
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One free port on ``host`` (see ``free_ports``)."""
    return free_ports(1, host)[0]

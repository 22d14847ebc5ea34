"""What ``pipeline stack status`` reports: each component's health at the address it was
checked, and the processes this stack started (shown as that component's only when they run at
that address)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.stack import processes
from pipeline.stack.health import Health
from pipeline.stack.preflight import StackError, split_host_port

__all__ = ["COMPONENTS", "Component", "StackStatus", "runs_at"]

Component = Literal["kafka", "elasticsearch", "postgres"]
COMPONENTS: tuple[Component, ...] = ("kafka", "elasticsearch", "postgres")


def runs_at(record: processes.ProcessRecord, address: str) -> bool:
    """Whether ``record``'s process is the one at ``address`` (``host:port``): the same port on
    the same host (``localhost`` and 127.0.0.1 are one)."""
    try:
        host, port = split_host_port(address)
        own_host, own_port = split_host_port(record.address)
    except StackError:
        return False
    local = {"127.0.0.1", "localhost"}
    return port == own_port and (host == own_host or {host, own_host} <= local)


@dataclass(frozen=True)
class StackStatus:
    kafka: Health
    elasticsearch: Health
    #: Every process this stack started that still runs, wherever it listens.
    records: dict[str, processes.ProcessRecord]
    postgres: Health
    #: Where each component was checked (``host:port``; Kafka's first bootstrap server): a
    #: process of ours elsewhere is not the one that answered, or did not, there.
    checked: dict[str, str] = field(default_factory=dict)

    def started_here(self, name: str) -> processes.ProcessRecord | None:
        """The process this stack started for ``name`` if it is the one at the address
        checked (``None`` when ours runs elsewhere: the settings point at another address)."""
        record = self.records.get(name)
        where = self.checked.get(name)
        if record is None or (where is not None and not runs_at(record, where)):
            return None
        return record

    @property
    def components(self) -> tuple[Health, ...]:
        return (self.kafka, self.elasticsearch, self.postgres)

    @property
    def healthy(self) -> bool:
        return all(h.ok for h in self.components)

    def healthy_for(self, components: set[Component]) -> bool:
        return all(h.ok for h in self.components if h.name in components)

    @property
    def problem(self) -> str | None:
        return self.problem_for(set(COMPONENTS))

    def problem_for(self, components: set[Component]) -> str | None:
        failing = [h for h in self.components if not h.ok and h.name in components]
        return "; ".join(f"{h.name} at {h.address}: {h.detail}" for h in failing) or None

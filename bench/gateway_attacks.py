"""vegeta (the HTTP load generator) against the servers of ``bench/gateway_load.py``: one
measured attack at a time, at a fixed rate or as fast as the connections allow, with the
server's CPU time per accepted request; every 202 a gateway gave is counted, so the benchmark
can check the topic holds exactly one message per 202.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Attack", "AttackedServer", "Attacker", "installed_vegeta", "slug"]

_ROOT = Path(__file__).resolve().parent.parent
#: Targets written per second of a saturation attack: more than any server here answers (a
#: faster one would reuse Idempotency-Keys, and the Kafka check at the end would say so).
CEILING_PER_S = 40_000
WARMUP_RATE = 500


class AttackedServer(Protocol):
    """What an attack needs of a server under test."""

    @property
    def name(self) -> str: ...
    @property
    def command(self) -> str: ...
    @property
    def port(self) -> int: ...
    def cpu_s(self) -> float: ...


def slug(name: str) -> str:
    """``name`` fit for a file name."""
    return "".join(char if char.isalnum() else "-" for char in name)


@dataclass(frozen=True)
class Attack:
    """One measured attack, from ``vegeta report -type=json``."""

    server: str
    kind: str  # "saturation" or "half rate"
    rate: int  # requests/s asked for; 0: as fast as the connections allow
    requests: int
    accepted_per_s: float
    #: CPU time the server's processes used per answer 202 during the attack: the figure the
    #: machine's other load disturbs least.
    cpu_ms_per_accepted: float
    success: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    status_codes: dict[str, int]
    errors: list[str]


def _targets(path: Path, port: int, prefix: str, count: int) -> Path:
    """``count`` distinct valid place_order requests, as vegeta JSON targets."""
    url = f"http://127.0.0.1:{port}/v1/requests/place_order"
    with path.open("w") as out:
        for number in range(count):
            order = f"{prefix}-{number}"
            body = {
                "order_id": order,
                "customer_id": f"customer-{number % 97}",
                "lines": [
                    {"sku": "sku-1", "quantity": 2, "unit_price": "12.50"},
                    {"sku": "sku-2", "quantity": 1, "unit_price": "3.99"},
                ],
            }
            target = {
                "method": "POST",
                "url": url,
                "header": {"Content-Type": ["application/json"], "Idempotency-Key": [order]},
                "body": base64.b64encode(json.dumps(body).encode()).decode(),
            }
            out.write(json.dumps(target) + "\n")
    return path


class Attacker:
    """vegeta against one port at a time; every 202 it got from a gateway is counted."""

    def __init__(self, vegeta: str, work: Path, duration_s: float, concurrency: int) -> None:
        self.vegeta = vegeta
        self.work = work
        self.duration_s = duration_s
        self.concurrency = concurrency
        self.gateway_202s = 0

    def attack(self, server: AttackedServer, kind: str, rate: int, duration_s: float) -> Attack:
        tag = f"{slug(server.name)}-{slug(kind)}-{uuid.uuid4().hex[:8]}"
        count = int((rate or CEILING_PER_S) * duration_s) + 1
        targets = _targets(self.work / f"{tag}.json", server.port, tag, count)
        pace = [f"-rate={rate}/s"] if rate else ["-rate=0", f"-max-workers={self.concurrency}"]
        results = self.work / f"{tag}.bin"
        cpu_before = server.cpu_s()
        with results.open("wb") as out:
            subprocess.run(
                [
                    self.vegeta, "attack", "-format=json", f"-targets={targets}", *pace,
                    f"-workers={self.concurrency}", f"-duration={duration_s}s", "-timeout=30s",
                ],
                stdout=out,
                check=True,
            )  # fmt: skip
        cpu_s = server.cpu_s() - cpu_before
        report: dict[str, Any] = json.loads(
            subprocess.run(
                [self.vegeta, "report", "-type=json", str(results)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        targets.unlink()
        results.unlink()
        codes = {str(k): int(v) for k, v in (report.get("status_codes") or {}).items()}
        if server.command == "serve-gateway":
            self.gateway_202s += codes.get("202", 0)
        requests = int(report["requests"])
        if requests > count:
            raise SystemExit(f"{server.name} answered more than {CEILING_PER_S}/s: raise it")
        elapsed_s = (report["duration"] + report["wait"]) / 1e9
        latency = report["latencies"]
        return Attack(
            server=server.name,
            kind=kind,
            rate=rate,
            requests=requests,
            accepted_per_s=codes.get("202", 0) / elapsed_s if elapsed_s else 0.0,
            cpu_ms_per_accepted=cpu_s * 1000 / max(1, codes.get("202", 0)),
            success=float(report["success"]),
            p50_ms=latency["50th"] / 1e6,
            p99_ms=latency["99th"] / 1e6,
            max_ms=latency["max"] / 1e6,
            status_codes=codes,
            errors=list(report.get("errors") or [])[:5],
        )

    def round(
        self, baseline: AttackedServer, gateway: AttackedServer, warmup_s: float
    ) -> dict[str, tuple[Attack, Attack]]:
        """Each server's warm-up and saturation, then each at half the gateway's saturation
        rate (the baseline too: latency compared at the same load)."""
        saturation = {}
        for server in (baseline, gateway):
            if warmup_s > 0:
                self.attack(server, "warm-up", WARMUP_RATE, warmup_s)
            saturation[server.name] = self.attack(server, "saturation", 0, self.duration_s)
        half = max(1, int(saturation[gateway.name].accepted_per_s / 2))
        return {
            server.name: (
                saturation[server.name],
                self.attack(server, "half rate", half, self.duration_s),
            )
            for server in (baseline, gateway)
        }


def installed_vegeta() -> tuple[str, str]:
    done = subprocess.run(
        [str(_ROOT / "scripts" / "install-vegeta.sh")], check=True, capture_output=True, text=True
    )
    path = done.stdout.strip().splitlines()[-1]
    version = subprocess.run([path, "-version"], capture_output=True, text=True, check=False)
    return path, version.stdout.split("\n")[0].removeprefix("Version: ").strip() or "unknown"

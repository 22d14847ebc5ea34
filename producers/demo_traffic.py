"""The demo's traffic: requests to the gateway, as a client service would send them.

Orders are placed, some cancelled, customers registered; a small share of the requests is
deliberately bad (schema violations, malformed JSON) and some are retried with the same
Idempotency-Key, so the demo shows what the gateway refuses and what it deduplicates.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass(frozen=True)
class DemoRequest:
    request_type: str
    body: bytes
    idempotency_key: str
    #: Sent a second time with the same key: the gateway must answer the same, producing nothing.
    replay: bool = False


def demo_requests(
    count: int, run: str, seed: int = 7, bad_share: float = 0.02, poison_share: float = 0.0
) -> Iterator[DemoRequest]:
    """``count`` requests: mostly PlaceOrder, some CancelOrder and RegisterCustomer, a few bad.

    ``poison_share``: requests the gateway accepts but the orders service cannot handle: an
    order of a ``RECALLED-`` SKU (its stock check always fails) or the cancellation of an order
    that does not exist (refused).
    """
    rng = random.Random(seed)
    placed: list[str] = []
    for n in range(count):
        key = f"{run}-{n}"
        roll = rng.random()
        if roll < bad_share / 2:
            yield DemoRequest("place_order", b'{"order_id": "broken', key)
            continue
        if roll < bad_share:
            body: dict[str, Any] = {"order_id": f"{run}-o{n}", "customer_id": "", "lines": []}
            yield DemoRequest("place_order", json.dumps(body).encode(), key)
            continue
        if roll < bad_share + poison_share:
            if n % 2:
                line = {"sku": f"RECALLED-{n}", "quantity": 1, "unit_price": "9.99"}
                body = {"order_id": f"{run}-o{n}", "customer_id": "c000", "lines": [line]}
                yield DemoRequest("place_order", json.dumps(body).encode(), key)
            else:
                body = {"order_id": f"{run}-missing{n}", "reason": "no such order"}
                yield DemoRequest("cancel_order", json.dumps(body).encode(), key)
            continue
        if roll < 0.10 and placed:
            body = {"order_id": rng.choice(placed), "reason": "changed my mind"}
            yield DemoRequest("cancel_order", json.dumps(body).encode(), key)
        elif roll < 0.15:
            body = {
                "customer_id": f"{run}-c{n}",
                "email": f"customer{n}@example.com",
                "name": f"Customer {n}",
            }
            yield DemoRequest("register_customer", json.dumps(body).encode(), key)
        else:
            order_id = f"{run}-o{n}"
            placed.append(order_id)
            body = {
                "order_id": order_id,
                "customer_id": f"c{rng.randrange(200):03d}",
                "lines": [
                    {
                        "sku": f"{run}-sku-{rng.randrange(50)}",
                        "quantity": rng.randrange(1, 5),
                        "unit_price": f"{rng.randrange(100, 10_000) / 100:.2f}",
                    }
                ],
            }
            yield DemoRequest("place_order", json.dumps(body).encode(), key, replay=n % 50 == 0)


@dataclass
class TrafficReport:
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)  # event id -> 202 answer
    statuses: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
    replays_matching: int = 0
    replays_differing: int = 0
    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0


async def send_requests(
    base_url: str,
    requests: list[DemoRequest],
    concurrency: int = 32,
    on_progress: Callable[[int], None] | None = None,
) -> TrafficReport:
    """Send every request through the gateway, ``concurrency`` at a time; tally the answers."""
    report = TrafficReport()
    queue: asyncio.Queue[DemoRequest] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)

    async def post(session: aiohttp.ClientSession, request: DemoRequest) -> tuple[int, Any]:
        began = time.perf_counter()
        async with session.post(
            f"{base_url}/v1/requests/{request.request_type}",
            data=request.body,
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": request.idempotency_key,
                "X-Client-Id": "demo",
            },
        ) as response:
            answer = await response.json()
        report.latencies_s.append(time.perf_counter() - began)
        report.statuses[str(response.status)] += 1
        return response.status, answer

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            request = queue.get_nowait()
            status, answer = await post(session, request)
            if status == 202:
                report.accepted[answer["event_id"]] = answer
                if request.replay:
                    again_status, again = await post(session, request)
                    if again_status == 202 and again == answer:
                        report.replays_matching += 1
                    else:
                        report.replays_differing += 1
            else:
                report.rejections[answer.get("error", {}).get("code", str(status))] += 1
            if on_progress is not None:
                on_progress(1)

    began = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    report.elapsed_s = time.perf_counter() - began
    return report

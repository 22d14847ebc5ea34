"""The gateway's /metrics under ``--workers``: every family listed, as one gateway lists them.

Each test runs in a fresh interpreter: prometheus_client picks its multiprocess mode when it is
first imported, from ``PROMETHEUS_MULTIPROC_DIR``, as a worker does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FAMILIES = [
    "# TYPE gateway_requests_total counter",
    "# TYPE gateway_produce_latency_seconds histogram",
    "# TYPE gateway_rejections_total counter",
    "# TYPE gateway_idempotent_replays_total counter",
    "# TYPE gateway_idempotency_keys_evicted_total counter",
    "# TYPE gateway_api_keys_last_read_timestamp_seconds gauge",
]


def _exposition(folder: Path | None, script: str = "") -> str:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if folder is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    code = (
        "from producers.gateway.metrics import GatewayMetrics\n"
        "metrics = GatewayMetrics()\n"
        f"{script}\n"
        "print(metrics.exposition().decode())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("workers", [False, True], ids=["one gateway", "workers"])
def test_every_family_is_listed_before_any_figure_of_it(tmp_path: Path, workers: bool):
    # With --workers 2 there was no gateway_produce_latency_seconds family at all before the
    # first event (nor the other labelled ones), where one gateway lists it empty.
    lines = _exposition(tmp_path if workers else None).splitlines()

    assert [family for family in FAMILIES if family not in lines] == []


def test_the_workers_figures_are_summed_and_listed_once(tmp_path: Path):
    observe = (
        "metrics.produce_latency.labels('requests.orders').observe(0.003)\n"
        "metrics.requests.labels('place_order', '202').inc()"
    )
    _exposition(tmp_path, observe)  # a first worker
    lines = _exposition(tmp_path, observe).splitlines()  # a second, answering the scrape

    assert 'gateway_produce_latency_seconds_count{topic="requests.orders"} 2.0' in lines
    assert 'gateway_requests_total{status="202",type="place_order"} 2.0' in lines
    assert sorted(line for line in lines if line.startswith("# TYPE")) == sorted(FAMILIES)


def test_under_workers_the_keys_last_read_is_the_stalest_workers(tmp_path: Path):
    # One worker that cannot read the keys is what an alert on their age must see.
    _exposition(tmp_path, "metrics.keys_read.set(1700000000)")  # stuck since then
    lines = _exposition(tmp_path, "metrics.keys_read.set(1700000500)").splitlines()

    assert "gateway_api_keys_last_read_timestamp_seconds 1.7e+09" in lines

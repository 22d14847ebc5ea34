"""bench/topic_namespace.py: the benches' saga services get topics and groups of their own,
and the catalogue the rest of the process sees is left as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.topic_namespace import (
    group,
    namespaced_catalogue,
    namespaced_names,
    service_environment,
)
from pipeline.topics import catalogue


def test_every_catalogue_topic_and_its_dead_letters_get_the_prefix():
    names = set(namespaced_catalogue("bench-x.").names)
    assert names == {f"bench-x.{name}" for name in catalogue.default_catalogue().names}
    assert "bench-x.saga.inventory.commands.dlq" in names


def test_the_catalogue_is_restored_after_making_the_namespaced_one():
    namespaced_catalogue("bench-x.")
    assert catalogue.SAGA_REPLIES == "saga.replies"
    assert catalogue.saga_commands_topic("payments") == "saga.payments.commands"
    assert "saga.replies" in catalogue.default_catalogue().names


def test_namespaced_names_cover_the_saga_and_request_topics():
    names = namespaced_names("bench-y.")
    assert names["SAGA_REPLIES"] == "bench-y.saga.replies"
    assert names["REQUESTS_ORDERS"] == "bench-y.requests.orders"
    assert names["SAGA_SHIPPING_COMMANDS"] == "bench-y.saga.shipping.commands"


def test_a_group_gets_the_prefix():
    assert group("bench-y.", "saga-orchestrator") == "bench-y.saga-orchestrator"


def test_service_environment_routes_logs_and_outbox_events_into_the_namespace():
    env = service_environment("bench-z.")
    assert env["PIPELINE_LOGS__TOPIC"] == "bench-z.logs"
    assert env["PIPELINE_LOGS__DLQ_TOPIC"] == "bench-z.logs.dlq"
    routes = json.loads(env["PIPELINE_OUTBOX__ROUTES"])
    assert routes == {
        "order": "bench-z.orders.events",
        "payment": "bench-z.payments.events",
        "saga": "bench-z.saga.events",
    }


def test_a_namespaced_service_reads_and_writes_only_the_namespaces_saga_topics():
    # In a process of its own, as the launcher runs it: the patch comes before any import of
    # the saga modules and the demo's services.
    script = (
        "from bench.topic_namespace import _patched\n"
        "patch = _patched('bench-x.')\n"
        "patch.__enter__()\n"
        "from pipeline.sagas import SagaTopics\n"
        "from consumers import payment_service, saga_orchestrator\n"
        "print(SagaTopics().replies, SagaTopics().events, SagaTopics().commands('payments'))\n"
        "print(*payment_service.processor.topics, *saga_orchestrator.processor.topics)\n"
    )
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=120
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [
        "bench-x.saga.replies",
        "bench-x.saga.events",
        "bench-x.saga.payments.commands",
        "bench-x.saga.payments.commands",
        "bench-x.saga.replies",
    ]

"""bench/topic_namespace.py: the benches' saga services get topics and groups of their own,
and the catalogue the rest of the process sees is left as it was."""

from __future__ import annotations

import json

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

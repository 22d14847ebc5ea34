"""Run the demo's services on topics and consumer groups of a benchmark's own, so a bench run
and the demo (or CI's e2e test of it) on the same stack never share a partition or a message.

The demo's services name their topics with the catalogue's constants
(``pipeline.topics.catalogue``: ``requests.orders``, ``saga.<participant>.commands``,
``saga.replies``, ...), bound at import by the library's saga modules (the saga topic
namespace's default, ``SAGA_NAMESPACE``) and by ``consumers/``, and their consumer group is the
processor's name. Neither is a setting (the demo's services take no ``SagaTopics`` of their
own, and the request and log topics have no namespace). So this launcher, a bench tool, sets
the names before anything imports them:

``python bench/topic_namespace.py PREFIX MODULE:PROCESSOR [pipeline process options]``

1. replaces the catalogue's topic names (and ``saga_commands_topic`` / ``requests_topic``) by
   ``PREFIX + name``, before the library's saga modules and ``consumers/`` are imported;
2. imports the processor's module and prefixes the processor's name (its consumer group);
3. runs ``pipeline process MODULE:PROCESSOR`` as the CLI does.

The programs that need no patch (``pipeline outbox relay``: its rows carry their topics) get
:func:`service_environment`: the outbox routes and the logs topic under the prefix.
:func:`namespaced_catalogue` gives the topics to create; :func:`topic` and :func:`group` name
one.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from pipeline.topics import catalogue  # noqa: E402  (after the path)
from pipeline.topics.spec import Catalogue  # noqa: E402

__all__ = [
    "group",
    "namespaced_catalogue",
    "namespaced_names",
    "service_environment",
    "topic",
]

#: The catalogue's topic-name constants the services use.
_CONSTANTS = (
    "REQUESTS_ORDERS",
    "REQUESTS_CUSTOMERS",
    "LOGS",
    "SAGA_REPLIES",
    "SAGA_EVENTS",
    "ORDERS_EVENTS",
    "PAYMENTS_EVENTS",
    "SAGA_PAYMENTS_COMMANDS",
    "SAGA_INVENTORY_COMMANDS",
    "SAGA_SHIPPING_COMMANDS",
    "SAGA_ORDERS_COMMANDS",
)
#: Modules that bind the names at import: they must not be imported before the patch.
_BINDERS = (
    "pipeline.request_types",
    "pipeline.sagas.topics",
    "pipeline.sagas.state",
    "pipeline.sagas.machine",
    "pipeline.sagas.participant",
    "pipeline.sagas.orchestrator",
)


def topic(prefix: str, name: str) -> str:
    """The namespaced name of a catalogue topic: ``topic("bench-1a.", "saga.replies")``."""
    return f"{prefix}{name}"


def group(prefix: str, name: str) -> str:
    """The namespaced consumer group of a processor named ``name``."""
    return f"{prefix}{name}"


def namespaced_names(prefix: str) -> dict[str, str]:
    """Each catalogue constant's namespaced value, by constant name (pure)."""
    return {name: topic(prefix, getattr(catalogue, name)) for name in _CONSTANTS}


@contextmanager
def _patched(prefix: str) -> Iterator[None]:
    saved: dict[str, Any] = {
        name: getattr(catalogue, name) for name in (*_CONSTANTS, "SAGA_NAMESPACE")
    }
    requests_topic = catalogue.requests_topic
    saga_commands_topic = catalogue.saga_commands_topic
    saved_functions: dict[str, Callable[..., str]] = {
        "saga_commands_topic": saga_commands_topic,
        "requests_topic": requests_topic,
    }
    for name, value in namespaced_names(prefix).items():
        setattr(catalogue, name, value)
    # The saga topics' namespace (SagaTopics' default): every saga topic under the prefix.
    catalogue.SAGA_NAMESPACE = topic(prefix, saved["SAGA_NAMESPACE"])

    def namespaced_commands(participant: str, namespace: str | None = None) -> str:
        return saga_commands_topic(participant, namespace or catalogue.SAGA_NAMESPACE)

    catalogue.saga_commands_topic = namespaced_commands
    catalogue.requests_topic = lambda value: topic(prefix, requests_topic(value))
    try:
        yield
    finally:
        for name, value in {**saved, **saved_functions}.items():
            setattr(catalogue, name, value)


def namespaced_catalogue(prefix: str) -> Catalogue:
    """The project's catalogue (every topic and its ``.dlq``) under the prefix, to create."""
    with _patched(prefix):
        return catalogue.default_catalogue()


def service_environment(prefix: str) -> dict[str, str]:
    """Settings for a namespaced service's process: its log lines and its outbox's routed
    events go to the namespace's topics, not to the demo's."""
    routes = {
        "order": topic(prefix, catalogue.ORDERS_EVENTS),
        "payment": topic(prefix, catalogue.PAYMENTS_EVENTS),
        "saga": topic(prefix, catalogue.SAGA_EVENTS),
    }
    return {
        "PIPELINE_LOGS__TOPIC": topic(prefix, catalogue.LOGS),
        "PIPELINE_LOGS__DLQ_TOPIC": topic(prefix, f"{catalogue.LOGS}.dlq"),
        "PIPELINE_OUTBOX__ROUTES": json.dumps(routes),
    }


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(
            "usage: topic_namespace.py PREFIX MODULE:PROCESSOR [pipeline process options]"
        )
    prefix, spec, *options = sys.argv[1:]
    early = [name for name in _BINDERS if name in sys.modules]
    if early:  # the patch would not reach them
        raise SystemExit(f"imported before the topic names were set: {', '.join(early)}")
    stack = _patched(prefix)
    stack.__enter__()  # for the life of this process
    module_name, _, attribute = spec.partition(":")
    processor = getattr(importlib.import_module(module_name), attribute)
    processor.name = group(prefix, processor.name)  # the consumer group (and the inbox's)
    from pipeline.cli.main import run

    sys.argv = ["pipeline", "process", spec, *options]
    run()


if __name__ == "__main__":
    main()

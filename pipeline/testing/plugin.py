"""The project's pytest plugin (registered through the ``pytest11`` entry point).

Markers: ``unit`` (no network: sockets are disabled), ``integration`` (the real stack),
``chaos`` (slow faults: kill -9, outages), ``e2e`` (the whole demo). Tests under
``tests/<kind>/`` get their marker from the folder.

Fixtures for tests against the real stack:

- ``pipeline_settings``: the settings, read once per session.
- ``pipeline_stack``: makes sure Kafka and Elasticsearch answer, starting the local stack if they
  do not (``--pipeline-stack=external`` only checks), and stops at the end what it started.
- ``kafka_admin``, ``elasticsearch_client``: clients of that stack.
- ``postgres_stack``: makes sure the stack's PostgreSQL answers (``127.0.0.1:<postgres_port>``,
  role/password/database ``pipeline``), starting it if it does not (``pipeline stack up
  --only postgres``; ``--pipeline-stack=external`` only checks); stopped at the end by the last
  test session out, only if a test session started it. Yields the ``StackStatus``.
- ``postgres_url``: a fresh, uniquely named database owned by role ``pipeline`` for one test,
  dropped after it (leftover connections terminated first); the value is its SQLAlchemy URL
  ``postgresql+psycopg://pipeline:pipeline@127.0.0.1:<port>/<name>``.
- ``unique_name``: a factory of names no other test or run uses.
- ``new_topic``: a factory of uniquely named topics, deleted after the test.
- ``consumer_group``: a unique consumer group id.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from pipeline.settings import PipelineSettings

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient
    from elasticsearch import Elasticsearch

    from pipeline.stack.manager import Component, StackManager, StackStatus

_KINDS = ("unit", "integration", "chaos", "e2e")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pipeline")
    group.addoption(
        "--pipeline-stack",
        choices=("local", "external"),
        default=os.environ.get("PIPELINE_TEST_STACK", "local"),
        help="local: start the local Kafka + Elasticsearch (+ PostgreSQL for postgres_stack) "
        "when they do not answer (default); "
        "external: use the configured addresses and never start anything.",
    )
    group.addoption(
        "--pipeline-keep-stack",
        action="store_true",
        default=False,
        help="leave a stack the tests started running afterwards (faster reruns).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "unit: needs no network (sockets are disabled)")
    config.addinivalue_line("markers", "integration: runs against the real Kafka/Elasticsearch")
    config.addinivalue_line("markers", "chaos: slow faults such as kill -9 and outages")
    config.addinivalue_line("markers", "e2e: the whole demo, end to end")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.path)).parts
        for kind in _KINDS:
            if kind in parts and "tests" in parts:
                item.add_marker(getattr(pytest.mark, kind))
        if item.get_closest_marker("unit") is not None:
            item.add_marker(pytest.mark.disable_socket)


@pytest.fixture(scope="session")
def pipeline_settings() -> PipelineSettings:
    return PipelineSettings()


@pytest.fixture(scope="session")
def pipeline_stack(
    request: pytest.FixtureRequest, pipeline_settings: PipelineSettings
) -> Iterator[StackStatus]:
    from pipeline.stack.manager import StackManager

    manager = StackManager(pipeline_settings)
    yield from _shared_stack(request, manager, {"kafka", "elasticsearch"}, "test-sessions")


def _shared_stack(
    request: pytest.FixtureRequest,
    manager: StackManager,
    components: set[Component],
    sessions_folder: str,
) -> Iterator[StackStatus]:
    """Make ``components`` answer for this test session; stop at the end what it started.

    Test sessions sharing the stack sign in (a file named by their pid in ``sessions_folder``);
    the one that started a component stops it only when no other session is still using it.
    """
    if request.config.getoption("--pipeline-stack") == "external":
        status = manager.status()
        if not status.healthy_for(components):
            problem = status.problem_for(components)
            pytest.fail(f"the external stack does not answer: {problem}", pytrace=False)
        yield status
        return
    sessions = manager.state_dir / sessions_folder
    sessions.mkdir(parents=True, exist_ok=True)
    me = sessions / str(os.getpid())
    me.touch()  # before `up`: a session that is leaving must not stop what we are about to use
    started: set[Component] = set()
    try:
        started = manager.up(only=components)
        yield manager.status()
    finally:
        me.unlink(missing_ok=True)
        others = [
            p for p in sessions.iterdir() if p.name.isdigit() and psutil.pid_exists(int(p.name))
        ]
        keep = request.config.getoption("--pipeline-keep-stack")
        if started and not keep and not others:
            manager.down(only=started)


@pytest.fixture(scope="session")
def postgres_stack(
    request: pytest.FixtureRequest, pipeline_settings: PipelineSettings
) -> Iterator[StackStatus]:
    """The stack's PostgreSQL answers (started when it does not; see the module docstring)."""
    from pipeline.stack.manager import StackManager

    manager = StackManager(pipeline_settings)
    yield from _shared_stack(request, manager, {"postgres"}, "test-sessions-postgres")


@pytest.fixture
def postgres_url(
    postgres_stack: StackStatus, pipeline_settings: PipelineSettings, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A new database owned by the stack's role, dropped after the test; its SQLAlchemy URL."""
    from pipeline.stack.postgres_node import create_database, database_url, drop_database

    stack = pipeline_settings.stack
    test = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    name = f"test_{test}_{uuid.uuid4().hex[:12]}"  # at most 63 bytes: PostgreSQL's limit
    create_database(stack, name)
    try:
        yield database_url(stack, name, with_password=True)
    finally:
        drop_database(stack, name)


@pytest.fixture(scope="session")
def kafka_admin(pipeline_stack: StackStatus, pipeline_settings: PipelineSettings) -> AdminClient:
    from pipeline.kafka.clients import build_admin

    return build_admin(pipeline_settings.kafka)


@pytest.fixture(scope="session")
def elasticsearch_client(
    pipeline_stack: StackStatus, pipeline_settings: PipelineSettings
) -> Iterator[Elasticsearch]:
    from pipeline.logs.elasticsearch import build_elasticsearch

    with build_elasticsearch(pipeline_settings.elasticsearch) as client:
        yield client


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``unique_name("orders")`` -> ``test.orders-test_x-1a2b3c4d``: unique per call and run."""
    test = re.sub(r"[^a-zA-Z0-9_-]", "_", request.node.name)[:60]

    def make(prefix: str = "t") -> str:
        return f"test.{prefix}-{test}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def consumer_group(unique_name: Callable[[str], str]) -> str:
    return unique_name("group")


@pytest.fixture
def new_topic(
    kafka_admin: AdminClient, unique_name: Callable[[str], str]
) -> Iterator[Callable[..., str]]:
    """``new_topic(partitions=3, **{"retention.ms": "60000"})`` creates a topic, deleted after.

    ``new_topic(name=f"{topic}.dlq", partitions=1)`` names it (e.g. the dead-letter topic of a
    unique topic) instead of drawing a unique name.
    """
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    created: list[str] = []

    def make(
        partitions: int = 3, prefix: str = "topic", name: str | None = None, **configs: Any
    ) -> str:
        name = name or unique_name(prefix)
        futures = kafka_admin.create_topics(
            [NewTopic(name, partitions, 1, config={k: str(v) for k, v in configs.items()})],
            operation_timeout=30,
        )
        futures[name].result(timeout=30)
        created.append(name)
        return name

    yield make
    if created:
        for future in kafka_admin.delete_topics(created, operation_timeout=30).values():
            # A topic left behind must not fail the test that made it.
            with contextlib.suppress(Exception):
                future.result(timeout=30)

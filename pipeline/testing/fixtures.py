"""The pytest plugin's fixtures and options, once a project turned it on.

Installing the package turns nothing on (see event_pipeline_pytest.py); a project enables this
module with ``pipeline_plugin = true`` in its pytest configuration (``[tool.pytest.ini_options]``
of pyproject.toml, or pytest.ini), or with ``-p pipeline.testing.fixtures``.

Options: ``--pipeline-stack local|external``, ``--pipeline-keep-stack``, ``--pipeline-backend
driver|kafka`` and ``--update-golden``.

The real stack:

- ``pipeline_settings``: the settings, read once per session.
- ``pipeline_stack``: makes sure Kafka and Elasticsearch answer, starting the local stack if they
  do not (``--pipeline-stack=external`` only checks), and stops at the end what it started.
- ``kafka_admin``, ``elasticsearch_client``: clients of that stack.
- ``postgres_stack``: makes sure the stack's PostgreSQL answers (``127.0.0.1:<postgres_port>``,
  role/password/database ``pipeline``), starting it if it does not (``pipeline stack up
  --only postgres``; ``--pipeline-stack=external`` only checks); stopped at the end by the last
  test session out, only if a test session started it. Yields the ``StackStatus``.
- ``secure_pipeline_settings``: the secure stack (``pipeline stack up --secure``) answers,
  started and stopped like ``pipeline_stack``; the settings of its clients.
- ``postgres_url``: a fresh, uniquely named database owned by role ``pipeline`` for one test,
  dropped after it (leftover connections terminated first); the value is its SQLAlchemy URL
  ``postgresql+psycopg://pipeline:pipeline@127.0.0.1:<port>/<name>``.
- ``unique_name``: a factory of names no other test or run uses.
- ``new_topic``: a factory of uniquely named topics, deleted after the test; ``unique_topic``:
  one such topic (3 partitions).
- ``consumer_group``: a unique consumer group id.

Replay and golden files:

- ``replay_into_topic(recording, topic=None, ...)``: a recording (a file or messages) produced to
  ``topic``, or to a new unique topic with as many partitions as the recording uses.
- ``replay_into_driver(target, recording, ...)``: the same into a ``ProcessorTestDriver`` or a
  ``PipelineHarness``; returns how many went to a topic some processor reads.
- ``golden``: :class:`~pipeline.testing.golden.Golden`, comparing outputs with files (ids and
  timestamps masked; ``--update-golden`` writes them), named after the test and its parameters
  but not its backend: a test run on both backends compares both with one file. It and
  ``--update-golden`` are pipeline/testing/golden_plugin.py's, registered with this module.
- ``pipeline_backend(processors, env=...)``: the processors on the broker-free harness or on the
  real stack (pipeline/testing/backends.py). A test using it runs on ``--pipeline-backend``, or,
  without that option, on the backends of its ``@pytest.mark.pipeline_backends("driver",
  "kafka")`` marker (``driver`` when it has none); a test whose marker leaves out the chosen
  backend is skipped.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from pipeline.errors import PipelineError
from pipeline.replay.recording import RecordedMessage, RecordingError, read_recording
from pipeline.settings import PipelineSettings, ProcessingSettings

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient
    from elasticsearch import Elasticsearch

    from pipeline.processing.driver import ProcessorTestDriver
    from pipeline.processing.harness import PipelineHarness
    from pipeline.replay.replayer import Pacing, ReplaySummary
    from pipeline.stack.manager import StackManager
    from pipeline.stack.status import Component, StackStatus
    from pipeline.testing.backends import BackendKind, PipelineBackend

#: The golden fixture and --update-golden, which come with this plugin.
pytest_plugins = ["pipeline.testing.golden_plugin"]
Recording = Path | str | Iterable[RecordedMessage]
#: The kinds of pipeline/testing/backends.py, which is imported only when a test starts a
#: backend (it brings the processing engine and the CLI: seconds at every pytest start).
BACKENDS = ("driver", "kafka")


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
    group.addoption(
        "--pipeline-backend",
        choices=BACKENDS,
        default=None,
        help="run tests that use the pipeline_backend fixture on the broker-free driver or on "
        "the real stack (default: the backends of their pipeline_backends marker, else driver).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pipeline_backends(*kinds): the backends (driver, kafka) a test using the "
        "pipeline_backend fixture runs on (--pipeline-backend picks one of them)",
    )


# trylast: the backend is the test's last parameter (after @pytest.mark.parametrize's), so the
# golden fixture finds its id at the end of the test's ids (see golden_plugin._golden_name).
@pytest.hookimpl(trylast=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a test using ``pipeline_backend`` on ``--pipeline-backend``, else on its marker's
    backends (``driver`` without one); a test whose marker leaves out the chosen backend is
    skipped."""
    if "pipeline_backend" not in metafunc.fixturenames:
        return
    chosen = metafunc.config.getoption("--pipeline-backend")
    marker = metafunc.definition.get_closest_marker("pipeline_backends")
    supported = list(marker.args) if marker else None
    unknown = [kind for kind in supported or [] if kind not in BACKENDS]
    if unknown or supported == []:
        # A collection error with this one line (a UsageError came with the plugin's frames).
        raise pytest.Collector.CollectError(
            f"{metafunc.definition.nodeid}: pipeline_backends takes some of "
            f"{', '.join(BACKENDS)}, got {', '.join(map(str, unknown)) or 'nothing'}"
        )
    if not chosen:
        params: list[Any] = supported or ["driver"]
    elif supported is None or chosen in supported:
        params = [chosen]
    else:
        reason = f"runs on {', '.join(supported)} only, not on --pipeline-backend {chosen}"
        params = [pytest.param(chosen, marks=pytest.mark.skip(reason=reason))]
    metafunc.parametrize("pipeline_backend", params, indirect=True)


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

    Test sessions sharing the stack sign in (a file named by their pid in ``sessions_folder``).
    What a session started is noted there too, and the last session to leave stops it, whichever
    session started it (make test runs two at once).
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
    try:
        for component in manager.up(only=components):
            # Noted for whichever session leaves last: sessions running side by side (make
            # test's two lanes) leave in any order, and the one that started a component may
            # not be the last to use it.
            (sessions / f"started-{component}").touch()
        yield manager.status()
    finally:
        with _sessions_lock(sessions):
            me.unlink(missing_ok=True)
            others = [
                p for p in sessions.iterdir() if p.name.isdigit() and psutil.pid_exists(int(p.name))
            ]
            keep = request.config.getoption("--pipeline-keep-stack")
            if not others:
                started = {c for c in components if (sessions / f"started-{c}").exists()}
                for component in started:
                    (sessions / f"started-{component}").unlink(missing_ok=True)
                if started and not keep:
                    manager.down(only=started)


@contextlib.contextmanager
def _sessions_lock(sessions: Path) -> Iterator[None]:
    """Sessions leave one at a time: two leaving together each saw the other still there, and
    neither stopped what the tests had started."""
    import fcntl

    with (sessions / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def postgres_stack(
    request: pytest.FixtureRequest, pipeline_settings: PipelineSettings
) -> Iterator[StackStatus]:
    """The stack's PostgreSQL answers (started when it does not; see the module docstring)."""
    from pipeline.stack.manager import StackManager

    manager = StackManager(pipeline_settings)
    yield from _shared_stack(request, manager, {"postgres"}, "test-sessions-postgres")


@pytest.fixture(scope="session")
def secure_pipeline_settings(
    request: pytest.FixtureRequest, pipeline_settings: PipelineSettings
) -> Iterator[PipelineSettings]:
    """The secure stack (``pipeline stack up --secure``: Kafka SASL_SSL, Elasticsearch HTTPS
    with a password, PostgreSQL TLS) answers, started like the plain one; the settings of its
    clients (passwords included, as ``SecretStr``)."""
    from pipeline.stack.manager import StackManager

    # A first start makes certificates, formats Kafka, runs initdb and starts Elasticsearch with
    # security on: on a busy two-core machine its Elasticsearch alone took 105 s of the 120 s a
    # component gets by default, so a session that starts it waits longer.
    stack = pipeline_settings.stack
    timeout_s = max(stack.start_timeout_s, 300.0)
    settings = pipeline_settings.model_copy(
        update={"stack": stack.model_copy(update={"start_timeout_s": timeout_s})}
    )
    manager = StackManager(settings, secure=True)
    components: set[Component] = {"kafka", "elasticsearch", "postgres"}
    for _status in _shared_stack(request, manager, components, "test-sessions"):
        yield manager.settings


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

    from pipeline.topics.admin import wait_until_described

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
        wait_until_described(kafka_admin, [name], timeout_s=30)  # acknowledged, not yet seen
        return name

    yield make
    if created:
        for future in kafka_admin.delete_topics(created, operation_timeout=30).values():
            # A topic left behind must not fail the test that made it.
            with contextlib.suppress(Exception):
                future.result(timeout=30)


@pytest.fixture
def unique_topic(new_topic: Callable[..., str]) -> str:
    """A new topic of 3 partitions, deleted after the test."""
    return new_topic()


def _messages(recording: Recording, root: Path, fixture: str) -> list[RecordedMessage]:
    """The messages of a recording given as messages, or as a file (relative to the rootdir);
    a :class:`TypeError` naming ``fixture`` for anything else."""
    __tracebackhide__ = True  # a failing test's report shows the test, not this helper
    if isinstance(recording, str) and ("\n" in recording or recording.lstrip().startswith("{")):
        # The file's text given for its path: it would be reported as "no recording at {...".
        raise TypeError(
            f"{fixture}: the recording looks like a recording's text, not a path: pass the "
            "file's path (or read_recording(path))"
        )
    if isinstance(recording, str | Path):
        path = Path(recording)
        try:
            return list(read_recording(path if path.is_absolute() else root / path))
        except RecordingError as error:
            # Raised from here: the report ends at the line and reason, not in the reader.
            raise RecordingError(str(error)) from None
    if isinstance(recording, bytes | bytearray) or not isinstance(recording, Iterable):
        raise TypeError(
            f"{fixture}: the recording is a path (text or a Path) or RecordedMessage objects; "
            f"got {type(recording).__name__}"
        )
    messages = list(recording)
    for number, message in enumerate(messages):
        if not isinstance(message, RecordedMessage):
            raise TypeError(
                f"{fixture}: the recording's item {number} is a {type(message).__name__}, not "
                "a RecordedMessage (read a file with read_recording(path))"
            )
    return messages


def _topic(topic: object, fixture: str) -> None:
    """A :class:`TypeError` naming ``fixture`` unless ``topic`` is a topic name or None."""
    __tracebackhide__ = True  # a failing test's report shows the test, not this helper
    if topic is not None and (not isinstance(topic, str) or not topic.strip()):
        raise TypeError(
            f"{fixture}: topic= takes a topic name (text) or None; got {topic!r:.60} "
            f"({type(topic).__name__})"
        )


def _flag(value: object, name: str, fixture: str) -> None:
    """A :class:`TypeError` naming ``fixture`` unless ``value`` is True or False."""
    __tracebackhide__ = True  # a failing test's report shows the test, not this helper
    if not isinstance(value, bool):
        raise TypeError(f"{fixture}: {name}= takes True or False; got {value!r:.60}")


@dataclass(frozen=True)
class Replayed:
    """Where ``replay_into_topic`` sent a recording, and its replay summary."""

    topic: str
    summary: ReplaySummary


@pytest.fixture
def replay_into_topic(
    request: pytest.FixtureRequest, pipeline_settings: PipelineSettings
) -> Callable[..., Replayed]:
    """``replay_into_topic(recording, topic=None, *, partitions=None, preserve_partitions=False,
    rewrite_ids=False, pacing=None)``: produce a recording (a file, relative to the rootdir, or
    messages) to ``topic``, or to a new unique topic (``partitions``, else as many as the
    recording uses; deleted after the test). Returns :class:`Replayed`."""
    from pipeline.replay.replayer import replay_into_kafka

    def replay(
        recording: Recording,
        topic: str | None = None,
        *,
        partitions: int | None = None,
        preserve_partitions: bool = False,
        rewrite_ids: bool = False,
        pacing: Pacing | None = None,
    ) -> Replayed:
        __tracebackhide__ = True  # a failing test's report shows the test, not this helper
        messages = _messages(recording, request.config.rootpath, "replay_into_topic")
        _topic(topic, "replay_into_topic")
        _flag(preserve_partitions, "preserve_partitions", "replay_into_topic")
        _flag(rewrite_ids, "rewrite_ids", "replay_into_topic")
        if partitions is not None and (type(partitions) is not int or partitions < 1):
            raise TypeError(
                f"replay_into_topic: partitions= takes a whole number above 0; got {partitions!r}"
            )
        if topic is None:
            used = max((m.partition for m in messages), default=0) + 1
            topic = request.getfixturevalue("new_topic")(partitions=partitions or used)
        summary = replay_into_kafka(
            pipeline_settings.kafka,
            messages,
            topic=topic,
            preserve_partitions=preserve_partitions,
            rewrite_ids=rewrite_ids,
            pacing=pacing,
        )
        return Replayed(topic, summary)

    return replay


@pytest.fixture
def replay_into_driver(request: pytest.FixtureRequest) -> Callable[..., int]:
    """``replay_into_driver(target, recording, *, topic=None, preserve_partitions=False)``:
    append a recording (a file, relative to the rootdir, or messages) to a
    ``ProcessorTestDriver`` or ``PipelineHarness``; returns how many messages went to a topic
    some processor reads (those of other topics are not handled, not counted, and warned of).
    Run the target afterwards (``run()``, ``run_until_idle()``)."""

    def replay(
        target: ProcessorTestDriver | PipelineHarness,
        recording: Recording,
        *,
        topic: str | None = None,
        preserve_partitions: bool = False,
    ) -> int:
        __tracebackhide__ = True  # a failing test's report shows the test, not this helper
        from pipeline.processing.driver import ProcessorTestDriver
        from pipeline.processing.harness import PipelineHarness

        if not isinstance(target, ProcessorTestDriver | PipelineHarness):
            raise TypeError(
                "replay_into_driver: the target is a ProcessorTestDriver or a PipelineHarness; "
                f"got {type(target).__name__}"
            )
        messages = _messages(recording, request.config.rootpath, "replay_into_driver")
        _topic(topic, "replay_into_driver")
        _flag(preserve_partitions, "preserve_partitions", "replay_into_driver")
        drivers = target.drivers if isinstance(target, PipelineHarness) else [target]
        read = {name for driver in drivers for name in driver.processor.topics}
        unread = sorted({topic or message.topic for message in messages} - read)
        if unread:
            warnings.warn(
                f"replay_into_driver: no processor reads {', '.join(unread)}: those messages "
                "are not handled, nor counted (topic= sends a recording to another topic)",
                stacklevel=2,
            )
        target.send_recording(messages, topic=topic, preserve_partitions=preserve_partitions)
        # What a processor will handle: a test asserting the count of a recording of the
        # wrong topic fails, rather than pass for nothing.
        return sum(1 for message in messages if (topic or message.topic) in read)

    return replay


class BackendFactory:
    """What the ``pipeline_backend`` fixture gives: ``kind``, and a call that starts the
    processors on that backend (closed after the test)."""

    def __init__(self, request: pytest.FixtureRequest, kind: BackendKind) -> None:
        self.kind = kind
        self._request = request
        self._started: list[PipelineBackend] = []
        if kind == "kafka":  # set up before this fixture, so torn down after its programs stop
            self._settings: PipelineSettings = request.getfixturevalue("pipeline_settings")
            request.getfixturevalue("pipeline_stack")
            self._database_url: str = request.getfixturevalue("postgres_url")
            self._workdir: Path = request.getfixturevalue("tmp_path")

    def __call__(
        self,
        processors: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        topics: Sequence[str] = (),
        settings: ProcessingSettings | None = None,
        partitions: int | Mapping[str, int] | None = None,
    ) -> PipelineBackend:
        """Start ``processors`` (``module:attribute`` specs). ``env``: settings for them
        (``PIPELINE_*`` variables; set in this process for the driver, given to the programs
        on the real stack). ``topics``: the topics their outbox writes to, created on the real
        stack when missing (those they read are created anyway). ``settings`` and
        ``partitions`` are the driver's only."""
        from pipeline.testing.backends import processor_specs, text_list

        processors = processor_specs(processors)
        topics = text_list(topics, "pipeline_backend: topics=", '["shop.points"]')
        if env is not None and (
            not isinstance(env, Mapping)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        ):
            raise TypeError(
                'pipeline_backend: env= takes a mapping of text to text, like {"PIPELINE_'
                f'PROCESSING__MAX_IN_FLIGHT": "1"}}; got {env!r:.60}'
            )
        try:
            return self._start(processors, env, topics, settings, partitions)
        except PipelineError as error:  # a processor spec that does not load, ...: one line
            failure = str(error)
        # Out of the except block: pytest showed the error it handled above this line too.
        pytest.fail(f"pipeline_backend: {failure}", pytrace=False)

    def _start(
        self,
        processors: list[str],
        env: Mapping[str, str] | None,
        topics: list[str],
        settings: ProcessingSettings | None,
        partitions: int | Mapping[str, int] | None,
    ) -> PipelineBackend:
        if self.kind == "kafka":
            from pipeline.testing.kafka_backend import KafkaBackend

            kafka = KafkaBackend(
                processors,
                settings=self._settings,
                database_url=self._database_url,
                workdir=self._workdir,
                env=env,
                cwd=self._request.config.rootpath,
                topics=topics,
            )
            self._started.append(kafka)
            return kafka.start()
        monkeypatch: pytest.MonkeyPatch = self._request.getfixturevalue("monkeypatch")
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        from pipeline.cli.main import read_settings
        from pipeline.testing.backends import DriverBackend, driver_processing

        # The processing settings and the outbox routes of the units' emits, as `pipeline
        # process` reads them (env= included: PIPELINE_PROCESSING__ON_DEAD_LETTER, ...), so a
        # test gets the same parking and retries on both backends; one that does not read is
        # its one line, as the programs say it.
        environment = read_settings()
        backend = DriverBackend(
            processors,
            settings=settings or driver_processing(environment.processing),
            partitions=partitions,
            outbox=environment.outbox,
        )
        self._started.append(backend)
        return backend

    def close(self) -> None:
        for backend in reversed(self._started):
            backend.close()
        self._started.clear()


@pytest.fixture
def pipeline_backend(request: pytest.FixtureRequest) -> Iterator[BackendFactory]:
    """Starts processors on the backend this test runs on (see the module's docstring)."""
    kind: BackendKind = getattr(request, "param", None) or "driver"
    factory = BackendFactory(request, kind)
    try:
        yield factory
    finally:
        factory.close()

"""The real-stack backend: processors as ``pipeline process`` programs, with the outbox relay.

:meth:`KafkaBackend.start`, in this order:

1. import the processors (their topics are what they read), migrate the database and run their
   startup hooks, so their tables exist before the test looks;
2. create the topics that are missing (existing ones are left as they are): those the
   processors read, their ``.dlq`` topics, and ``topics`` (where the processors' outbox writes),
   as the catalogue declares them (the project's by default), else with 3 partitions;
3. commit the offsets of each processor's test group (:attr:`KafkaBackend.groups`) at the end
   of its topics, so messages already there (other runs', the demo's: topic names may be
   shared) are not this test's, and note where their ``.dlq`` topics end, so that
   :meth:`KafkaBackend.dead_letters` gives this test's only;
4. start one ``pipeline process MODULE:ATTRIBUTE --group GROUP`` per processor and one
   ``pipeline outbox relay``, on the given database, each logging (as text) to a file in
   ``workdir``.

Each processor runs under a consumer group of the test's own, ``<name>.test-<token>`` (a short
random token per backend), never under its name: the processor may also really run on this
stack (a dev or shared one), and committing its real group at the end of its topics moved that
group past the events it had not read yet, which it then never handled. The real group's
offsets are never read or moved. The test's events still go into the named topics, though,
where a processor really running on the stack reads them too.

:meth:`KafkaBackend.settle` waits until the outbox is empty and no test group has lag, three
checks in a row; :meth:`KafkaBackend.close` stops the programs (SIGTERM, then SIGKILL after
30 s) and deletes the test groups.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, TypeVar

from confluent_kafka import Consumer, TopicPartition
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from pipeline.cli.process import load_processor
from pipeline.database import build_engine, migrate
from pipeline.dead_letters.letter import DeadLetter, Marker, pending_dead_letters
from pipeline.envelope import Event, KafkaMessage, encode
from pipeline.errors import PipelineError
from pipeline.kafka.clients import build_admin, build_consumer, build_producer
from pipeline.kafka.readback import end_offsets
from pipeline.kafka.watermarks import read_watermarks
from pipeline.outbox.table import outbox_status
from pipeline.plurals import counted
from pipeline.processing.driver import unread_topic_error
from pipeline.replay.recording import RecordedMessage
from pipeline.settings import DatabaseSettings, PipelineSettings
from pipeline.testing.backends import BackendKind, last_returned
from pipeline.topic_names import kafka_name_problem
from pipeline.topics.admin import apply_plan, describe_cluster_topics
from pipeline.topics.catalogue import DEFAULT_PARTITIONS, default_catalogue
from pipeline.topics.plan import CreateTopic, Plan
from pipeline.topics.spec import Catalogue, TopicSpec, dlq_name

__all__ = ["KafkaBackend", "pipeline_command"]

T = TypeVar("T")
_IDLE_CHECKS = 3
#: How long :meth:`KafkaBackend.dead_letters` may take to read a dead-letter topic to its end.
_DLQ_READ_S = 30.0


def pipeline_command() -> list[str]:
    """How to run this package's ``pipeline`` command (the one next to this Python first)."""
    beside = Path(sys.executable).parent / "pipeline"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("pipeline")
    if found:
        return [found]
    return [sys.executable, "-c", "from pipeline.cli.main import run; run()"]


def _test_topic(name: str) -> TopicSpec:
    """A topic a test's processors read or write that no catalogue declares: any name Kafka
    takes (the catalogue's ``<domain>.<kind>`` convention is for topics it declares)."""
    problem = kafka_name_problem(name)
    if problem is not None:
        raise PipelineError(problem)
    return TopicSpec.model_construct(name=name, partitions=DEFAULT_PARTITIONS, replication_factor=1)


class _Program:
    """One subprocess of the backend; its stdout and stderr go to ``log_path``."""

    def __init__(
        self, name: str, args: list[str], env: Mapping[str, str], cwd: Path, log_path: Path
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[str] = log_path.open("w")
        self.popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 25) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM): it finishes what it handles and commits."""
        if self.alive():
            self.popen.terminate()

    def wait(self, timeout_s: float = 30.0) -> None:
        """Wait until it stopped; SIGKILL once ``timeout_s`` passed."""
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=30)
        self._log.close()


class KafkaBackend:
    """The processors named by ``processors`` as programs on the real stack (see the module's
    docstring). ``env`` is added to every program's environment; ``cwd`` is where they run
    (and what goes first on their ``PYTHONPATH``, so the processors' modules import)."""

    kind: BackendKind = "kafka"

    def __init__(
        self,
        processors: Sequence[str],
        *,
        settings: PipelineSettings,
        database_url: str,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        topics: Sequence[str] = (),
        catalogue: Catalogue | None = None,
        poll_s: float = 0.5,
    ) -> None:
        self.processors = list(processors)
        self.settings = settings
        self.database_url = database_url
        self.workdir = workdir
        self.env = dict(env or {})
        self.cwd = cwd or Path.cwd()
        self.topics = list(topics)
        self.catalogue = catalogue if catalogue is not None else default_catalogue()
        self.poll_s = poll_s
        self.programs: list[_Program] = []
        #: The token of this backend's consumer groups (``<name>.test-<token>``).
        self.token = secrets.token_hex(4)
        #: The consumer group each processor runs under, by the processor's name (step 1).
        self.groups: dict[str, str] = {}
        #: Where each test group's topics ended at the start, by group.
        self._groups: dict[str, list[TopicPartition]] = {}
        self._read: dict[str, list[str]] = {}
        #: Where each ``.dlq`` partition ended at the start: letters before are not this test's.
        self._dlq_starts: dict[tuple[str, int], int] = {}
        self._consumers: dict[str, Consumer] = {}
        self._database: Engine | None = None

    @property
    def database(self) -> Engine:
        if self._database is None:
            self._database = build_engine(DatabaseSettings(url=self.database_url))
        return self._database

    # --- starting ----------------------------------------------------------------------------

    def start(self) -> KafkaBackend:
        """Steps 1-4 of the module's docstring; returns the backend."""
        loaded = [load_processor(spec) for spec in self.processors]
        migrate(self.database)
        for processor in loaded:
            processor.start(self.database)
        topics = {processor.name: processor.topics for processor in loaded}
        self._read = topics
        self.groups = {name: f"{name}.test-{self.token}" for name in topics}
        read = {topic for names in topics.values() for topic in names}
        self._create_missing(sorted({*read, *map(dlq_name, read), *self.topics}))
        for name, names in topics.items():
            group = self.groups[name]  # the test's own: the real group's offsets stay as they are
            consumer = build_consumer(self.settings.kafka, group)
            self._consumers[group] = consumer
            self._groups[group] = self._ends(consumer, names)
            consumer.commit(offsets=self._groups[group], asynchronous=False)
            for end in self._ends(consumer, map(dlq_name, names)):
                self._dlq_starts[(end.topic, end.partition)] = end.offset
        env = self._program_env()
        command = pipeline_command()
        for spec, processor in zip(self.processors, loaded, strict=True):
            group = self.groups[processor.name]
            self._launch(processor.name, [*command, "process", spec, "--group", group], env)
        self._launch("outbox-relay", [*command, "outbox", "relay"], env)
        return self

    def _create_missing(self, names: list[str]) -> None:
        admin = build_admin(self.settings.kafka)
        existing = describe_cluster_topics(admin, names)
        missing = [name for name in names if name not in existing]
        if not missing:
            return
        declared = {spec.name: spec for spec in self.catalogue}
        specs = [declared.get(name) or _test_topic(name) for name in missing]
        apply_plan(admin, Plan(changes=tuple(CreateTopic(spec) for spec in specs)))

    @staticmethod
    def _ends(consumer: Consumer, topics: Iterable[str]) -> list[TopicPartition]:
        # end_offsets waits out a topic created a moment ago (no leader elected yet).
        return [position for topic in topics for position in end_offsets(consumer, topic)]

    def _program_env(self) -> dict[str, str]:
        python_path = os.pathsep.join(
            part for part in (str(self.cwd), os.environ.get("PYTHONPATH")) if part
        )
        return {
            **os.environ,
            "PIPELINE_DATABASE__URL": self.database_url,
            "PIPELINE_LOGS__CONSOLE": "text",
            "PYTHONPATH": python_path,
            **self.env,
        }

    def _launch(self, name: str, args: list[str], env: Mapping[str, str]) -> None:
        log_path = self.workdir / f"{name}.log"
        self.programs.append(_Program(name, args, env, self.cwd, log_path))

    # --- input -------------------------------------------------------------------------------

    def send(self, topic: str, messages: Iterable[Event | KafkaMessage]) -> int:
        self._check_read(topic)
        producer = build_producer(self.settings.kafka)
        count = 0
        for item in messages:
            message = encode(item) if isinstance(item, Event) else item
            headers: list[tuple[str, str | bytes | None]] = list(message.headers)
            producer.produce(topic, key=message.key, value=message.value, headers=headers)
            count += 1
            if count % 1000 == 0:
                producer.poll(0)
        left = producer.flush(60)
        if left:
            raise AssertionError(f"{counted(left, 'message')} to {topic} not acknowledged by Kafka")
        return count

    def replay(self, messages: Iterable[RecordedMessage], *, topic: str | None = None) -> int:
        from pipeline.replay.replayer import replay_into_kafka

        return replay_into_kafka(self.settings.kafka, messages, topic=topic).sent

    def consumer_group(self, processor: str) -> str:
        """The consumer group the processor named ``processor`` runs under: the test's own
        (``<name>.test-<token>``), which owns its inbox rows and parked keys."""
        if processor not in self.groups:
            known = ", ".join(self.groups) or "none"
            raise ValueError(f"no processor {processor!r} here (the processors: {known})")
        return self.groups[processor]

    def _check_read(self, topic: str) -> None:
        """A :class:`ValueError` naming the topics read unless a processor reads ``topic``, as
        on the driver: nothing would handle what is sent there."""
        if not any(topic in names for names in self._read.values()):
            read = [name for names in self._read.values() for name in names]
            raise unread_topic_error(topic, read, ", ".join(self._read))

    # --- dead letters ------------------------------------------------------------------------

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        """The pending dead letters this test's processors sent to ``<topic>.dlq``, read back
        as ``pipeline dlq inspect`` reads them (those there before :meth:`start` left out)."""
        from pipeline.dead_letters.redrive import open_dead_letter_consumer, read_dead_letters

        self._check_read(topic)
        dlq = dlq_name(topic)
        with open_dead_letter_consumer(self.settings.kafka) as consumer:
            read = read_dead_letters(consumer, dlq, timeout_s=_DLQ_READ_S)
        # The letters name the test group that gave up (``<name>.test-<token>``); the driver's
        # name the processor, whose name is its group there. Each is given back under the
        # processor's name, so that one test body sees the same DeadLetter on either backend
        # (letters of other groups, a processor really running on the stack say, are not this
        # test's). To redrive one to the program, use ``pipeline dlq redrive``, which reads
        # the letter as it is, test group included.
        names = {group: name for name, group in self.groups.items()}
        return [
            dataclasses.replace(letter, consumer_group=names[letter.consumer_group])
            for letter in pending_dead_letters(item for item in read if self._this_tests(item))
            if letter.consumer_group in names
        ]

    def _this_tests(self, item: DeadLetter | Marker | None) -> bool:
        """Whether ``item`` is a dead letter sent since :meth:`start` (or a marker, which only
        settles a letter)."""
        if not isinstance(item, DeadLetter):
            return True
        start = self._dlq_starts.get((item.dlq_topic, item.dlq_partition), 0)
        return item.dlq_offset >= start

    # --- waiting -----------------------------------------------------------------------------

    def lag(self) -> int:
        """Records not yet handled (and committed), over every processor's topics."""
        total = 0
        for group, ends in self._groups.items():
            consumer = self._consumers[group]
            wanted = [TopicPartition(tp.topic, tp.partition) for tp in ends]
            for committed in consumer.committed(wanted, timeout=30):
                _, high = read_watermarks(
                    consumer, committed.topic, committed.partition, timeout_s=30
                )
                total += max(high - max(committed.offset, 0), 0)
        return total

    def backlog(self) -> int:
        """Outbox rows not relayed yet."""
        return outbox_status(self.database).backlog

    def settle(self, *, timeout_s: float = 120.0) -> None:
        checks = {"idle": 0}

        def idle() -> bool:
            quiet = self.backlog() == 0 and self.lag() == 0
            checks["idle"] = checks["idle"] + 1 if quiet else 0
            return checks["idle"] >= _IDLE_CHECKS

        self.wait_until(idle, timeout_s=timeout_s, what="the processors idle")

    def wait_until(self, condition: Callable[[], T], *, timeout_s: float, what: str) -> T:
        """Poll ``condition`` every ``poll_s`` seconds (a database error counts as "not yet");
        every program must stay alive meanwhile."""
        deadline = time.monotonic() + timeout_s
        last = "the condition did not return (a database error)"
        while True:
            for program in self.programs:
                if not program.alive():
                    raise AssertionError(
                        f"{program.name} exited (code {program.popen.returncode}) while waiting "
                        f"for {what}:\n{program.tail()}"
                    )
            with contextlib.suppress(DBAPIError):
                found = condition()
                if found:
                    return found
                last = last_returned(found)
            if time.monotonic() > deadline:
                tails = "\n\n".join(f"--- {p.name}:\n{p.tail(10)}" for p in self.programs)
                raise AssertionError(f"{what}: not within {timeout_s:g} s; {last}\n{tails}")
            time.sleep(self.poll_s)

    # --- the end -----------------------------------------------------------------------------

    def close(self) -> None:
        for program in self.programs:  # all at once: each takes seconds to stop
            program.terminate()
        for program in self.programs:
            program.wait()
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()
        self._delete_groups()
        if self._database is not None:
            self._database.dispose()

    def _delete_groups(self) -> None:
        """Delete the test's consumer groups (their programs stopped): they are of no use after
        it. A group that cannot be deleted (Kafka away, a killed program's member still in it
        until its session times out) is left to Kafka's offset retention."""
        groups = list(self._groups)
        self._groups.clear()
        if not groups:
            return
        admin = build_admin(self.settings.kafka)
        with contextlib.suppress(Exception):
            for future in admin.delete_consumer_groups(groups, request_timeout=10).values():
                with contextlib.suppress(Exception):
                    future.result(15)

"""The pipeline against the secure stack (``pipeline stack up --secure``): Kafka on SASL_SSL
(SCRAM-SHA-512), Elasticsearch on HTTPS with a password, PostgreSQL with TLS.

One path end to end: EventProducer -> ``pipeline process`` (the Faust runtime, over aiokafka's
TLS and SASL) -> its outbox in PostgreSQL -> ``pipeline outbox relay`` -> a topic; and the
processor's log lines -> the logs topic -> ``pipeline logs ship`` -> Elasticsearch. No password
appears in anything these programs print. A wrong password or a missing CA is refused with one
line that says so.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import struct
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from pipeline.envelope import Event, decode_message
from pipeline.kafka.clients import build_admin, build_consumer
from pipeline.kafka.producer import build_event_producer
from pipeline.logs.elasticsearch import build_elasticsearch
from pipeline.ports import free_port
from pipeline.settings import PipelineSettings
from pipeline.stack.postgres_node import create_database, drop_database
from pipeline.stack.secure import client_environment, secure_database_url
from pipeline.topics.catalogue import dlq_name
from tests.support.processor_runs import REPO_ROOT, committed_total, wait_until
from tests.support.stack_cli import PIPELINE, run_pipeline

# The first test of a session also waits for the secure stack to start (minutes on a busy
# machine): its budget covers that.
pytestmark = [pytest.mark.secure, pytest.mark.timeout(900)]

EVENTS = 20
SPEC = "tests.support.relay_processor:processor"


def _secrets(settings: PipelineSettings) -> list[str]:
    found = [settings.kafka.sasl_password, settings.elasticsearch.password]
    found.append(settings.database.password)
    return [secret.get_secret_value() for secret in found if secret is not None]


def _committed(settings: PipelineSettings, topic: str, group: str) -> int:
    """The group's committed total; -1 while the broker's group coordinator is not ready (a
    fresh cluster's first group)."""
    try:
        return committed_total(settings, topic, group, 3)
    except KafkaException:
        return -1


def _environment(settings: PipelineSettings, **extra: str) -> dict[str, str]:
    """The environment of a program pointed at the secure stack (no plain-stack settings)."""
    own = ("PIPELINE_KAFKA__", "PIPELINE_ELASTICSEARCH__", "PIPELINE_DATABASE__")
    env = {name: value for name, value in os.environ.items() if not name.startswith(own)}
    for name, value in client_environment(settings).items():
        env[name] = value if isinstance(value, str) else value.get_secret_value()
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    # A text console unless asked: the tests read its `error: ...` lines.
    return {
        **env,
        "PYTHONPATH": python_path,
        "PIPELINE_LOGS__LEVEL": "INFO",
        "PIPELINE_LOGS__CONSOLE": "text",
        **extra,
    }


@pytest.fixture
def secure_topics(secure_pipeline_settings: PipelineSettings) -> Iterator[dict[str, str]]:
    """Uniquely named topics on the secure Kafka, deleted after the test."""
    suffix = uuid.uuid4().hex[:10]
    names = {kind: f"secure-{kind}-{suffix}" for kind in ("in", "out", "logs", "logsdlq")}
    names["dlq"] = dlq_name(names["in"])
    admin = build_admin(secure_pipeline_settings.kafka)
    partitions = {"in": 3}
    created = admin.create_topics(
        [NewTopic(name, partitions.get(kind, 1), 1) for kind, name in names.items()]
    )
    for future in created.values():
        future.result(timeout=30)
    try:
        yield names
    finally:
        for future in admin.delete_topics(list(names.values())).values():
            future.exception(timeout=30)


@pytest.fixture
def secure_database(secure_pipeline_settings: PipelineSettings) -> Iterator[str]:
    """A new database on the secure PostgreSQL; its URL (TLS, the CA checked; no password)."""
    stack = secure_pipeline_settings.stack
    name = f"test_secure_{uuid.uuid4().hex[:12]}"
    create_database(stack, name)
    try:
        ca = secure_pipeline_settings.kafka.ssl_ca_location
        assert ca is not None
        yield secure_database_url(stack, ca, name)
    finally:
        drop_database(stack, name)


def test_produce_process_relay_and_ship_logs_over_tls_with_passwords(
    secure_pipeline_settings, secure_topics, secure_database, tmp_path
):
    settings = secure_pipeline_settings
    topics = secure_topics
    group = f"secure-relay-{uuid.uuid4().hex[:8]}"
    alias = f"test-logs-{uuid.uuid4().hex[:10]}"
    env = _environment(
        settings,
        PIPELINE_DATABASE__URL=secure_database,
        PIPELINE_LOGS__TOPIC=topics["logs"],
        PIPELINE_LOGS__DLQ_TOPIC=topics["logsdlq"],
        PIPELINE_LOGS__INDEX_ALIAS=alias,
        PIPELINE_LOGS__CONSOLE="json",
        RELAY_TOPIC=topics["in"],
        RELAY_OUT_TOPIC=topics["out"],
        RELAY_GROUP=group,
    )
    outputs: list[str] = []

    # 1. produce, over SASL_SSL
    events = [
        Event(source="/tests/secure", type="Noted", partitionkey=f"k{n % 5}") for n in range(EVENTS)
    ]
    with build_event_producer(settings.kafka, settings.producer) as producer:
        for event in events:
            producer.send(topics["in"], event)
    produced = {event.id for event in events}

    # 2. process: the Faust runtime reads over TLS + SCRAM, the outbox is in PostgreSQL (TLS)
    stderr = tmp_path / "process.stderr"
    with stderr.open("w") as sink:
        process = subprocess.Popen(
            [PIPELINE, "process", SPEC], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        wait_until(
            lambda: (
                _committed(settings, topics["in"], group) == EVENTS or process.poll() is not None
            ),
            timeout_s=120,
            what="the processor to commit every event",
        )
    finally:
        process.terminate()
        process.wait(timeout=60)
    outputs.append(stderr.read_text())
    assert _committed(settings, topics["in"], group) == EVENTS, outputs[-1][-2000:]

    # 3. the outbox relay publishes what the processor wrote
    relay = run_pipeline("outbox", "relay", "--once", env=env, timeout=120)
    outputs += [relay.stdout, relay.stderr]
    assert relay.returncode == 0, relay.stderr
    consumer = build_consumer(settings.kafka, f"{group}-check")
    relayed: set[str] = set()
    try:
        consumer.subscribe([topics["out"]])

        def read_relayed() -> bool:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                relayed.add(str(decode_message(message).data["of"]))
            return relayed == produced

        wait_until(read_relayed, timeout_s=60, what="every relayed event", every_s=0)
    finally:
        consumer.close()
    assert relayed == produced

    # 4. the processor's log lines, shipped to the secured Elasticsearch
    ship = run_pipeline("logs", "ship", "--until-idle", "3", env=env, timeout=180)
    outputs += [ship.stdout, ship.stderr]
    assert ship.returncode == 0, ship.stderr
    with build_elasticsearch(settings.elasticsearch) as es:
        try:
            es.indices.refresh(index=alias)
            found = es.search(
                index=alias, size=1000, query={"match_phrase": {"message": "passed on"}}
            )
            messages = {hit["_source"]["message"] for hit in found["hits"]["hits"]}
            shipped = es.search(index=alias, size=1000, query={"match_all": {}})
            outputs.append(json.dumps(shipped["hits"]["hits"]))  # every line shipped
        finally:
            es.options(ignore_status=404).indices.delete(index=f"{alias}-*")
            es.options(ignore_status=404).indices.delete_index_template(name=alias)
    assert messages == {f"passed on {event_id}" for event_id in produced}

    # 5. no password in anything printed or shipped
    assert len(outputs[-1]) > 1000  # the shipped lines are there to be searched
    for secret in _secrets(settings):
        assert not any(secret in text for text in outputs)


def _started(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PIPELINE, *args],
        env={**env, "COLUMNS": "250"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_wrong_password_or_an_untrusted_certificate_is_one_line_without_the_password(
    secure_pipeline_settings, secure_topics
):
    settings = secure_pipeline_settings
    wrong = f"wrong-{uuid.uuid4().hex}"
    kafka_password = _environment(settings, PIPELINE_KAFKA__SASL_PASSWORD=wrong)
    kafka_mechanism = _environment(settings, PIPELINE_KAFKA__SASL_MECHANISM="PLAIN")
    kafka_no_ca = _environment(settings)
    del kafka_no_ca["PIPELINE_KAFKA__SSL_CA_LOCATION"]
    es_password = _environment(
        settings,
        PIPELINE_ELASTICSEARCH__PASSWORD=wrong,
        # the shipper checks its topics on Kafka (which takes the right password) first
        PIPELINE_LOGS__TOPIC=secure_topics["logs"],
        PIPELINE_LOGS__DLQ_TOPIC=secure_topics["logsdlq"],
    )
    es_no_ca = _environment(settings)
    del es_no_ca["PIPELINE_ELASTICSEARCH__CA_CERTS"]
    # All at once (a refused Kafka login or handshake is reported within about a second).
    runs = {
        "kafka password": _started(kafka_password, "topics", "list"),
        "kafka ca": _started(kafka_no_ca, "topics", "list"),
        "kafka mechanism": _started(kafka_mechanism, "topics", "list"),
        "es password (search)": _started(es_password, "logs", "search", "--since", "1m"),
        "es password (ship)": _started(es_password, "logs", "ship", "--until-idle", "1"),
        "es ca": _started(es_no_ca, "logs", "search", "--since", "1m"),
    }
    printed = {what: run.communicate(timeout=120) for what, run in runs.items()}
    for what, run in runs.items():
        assert run.returncode == 2, (what, printed[what])
        out, err = printed[what]
        assert wrong not in out + err, what
        for secret in _secrets(settings):
            assert secret not in out + err, what
    error_line = {what: err.strip().splitlines()[-1] for what, (_out, err) in printed.items()}

    kafka_at = f"error: Kafka at {settings.kafka.bootstrap_servers} refused the connection"
    kafka_hint = "check the PIPELINE_KAFKA__SASL_* and PIPELINE_KAFKA__SSL_* settings"
    # One line, after at most the note every command prints when Kafka is slow to answer (the
    # refusal comes within about a second, the note after one).
    connecting = f"connecting to Kafka at {settings.kafka.bootstrap_servers} ..."
    said = printed["kafka password"][1].strip().splitlines()
    assert [line for line in said if line != connecting] == [
        f"{kafka_at} (SASL authentication error: Authentication failed during authentication "
        f"due to invalid credentials with SASL mechanism SCRAM-SHA-512); {kafka_hint}"
    ]
    assert error_line["kafka mechanism"] == (
        f"{kafka_at} (SASL handshake failed: the broker offers SCRAM-SHA-512, not PLAIN "
        f"(PIPELINE_KAFKA__SASL_MECHANISM)); {kafka_hint}"
    )
    assert re.fullmatch(
        rf"{re.escape(kafka_at)} \(SSL handshake failed: .*certificate verify failed.*\); "
        + re.escape(kafka_hint),
        error_line["kafka ca"],
    ), error_line["kafka ca"]
    refused = (
        "error: Elasticsearch refused the credentials (401: unable to authenticate user "
        "[pipeline] for REST request "
    )
    es_hint = "check PIPELINE_ELASTICSEARCH__USERNAME and __PASSWORD (or __API_KEY)"
    for what in ("es password (search)", "es password (ship)"):
        assert error_line[what].startswith(refused), error_line[what]
        assert error_line[what].endswith(es_hint), error_line[what]
    assert error_line["es ca"].startswith("error: the TLS handshake with Elasticsearch failed ("), (
        error_line["es ca"]
    )
    assert "CERTIFICATE_VERIFY_FAILED" in error_line["es ca"], error_line["es ca"]


def test_the_gateway_refuses_to_start_when_kafka_refuses_its_login(
    secure_pipeline_settings, secure_database
):
    # It used to start, answer every request after 30 s with a 503 saying to retry, and say
    # "refused" only in /healthz: credentials do not mend by waiting.
    settings = secure_pipeline_settings
    wrong = f"wrong-{uuid.uuid4().hex}"
    env = _environment(
        settings,
        PIPELINE_KAFKA__SASL_PASSWORD=wrong,
        PIPELINE_DATABASE__URL=secure_database,
        PIPELINE_LOGS__CONSOLE="text",
    )
    gateway = _started(env, "gateway", "--port", str(free_port()))
    try:
        _out, err = gateway.communicate(timeout=60)
    finally:
        gateway.kill()

    assert gateway.returncode == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(
        f"error: Kafka at {settings.kafka.bootstrap_servers} refused the connection (SASL "
        "authentication error"
    ), err
    assert lines[-1].endswith("check the PIPELINE_KAFKA__SASL_* and PIPELINE_KAFKA__SSL_* settings")
    assert "Traceback" not in err
    assert wrong not in err
    for secret in _secrets(settings):
        assert secret not in err


def _api_versions_request() -> bytes:
    """Kafka's ApiVersions request (v0, correlation id 1): any Kafka listener answers it."""
    body = struct.pack(">hhih", 18, 0, 1, 4) + b"test"
    return struct.pack(">i", len(body)) + body


def test_the_kafka_controller_listener_takes_only_the_stacks_own_certificate(
    secure_pipeline_settings,
):
    # A PLAINTEXT controller listener answered anyone local, and took config changes (say a
    # topic's retention.ms=1) without a password, around SASL.
    settings = secure_pipeline_settings
    address = ("127.0.0.1", settings.stack.kafka_controller_port)
    with socket.create_connection(address, timeout=10) as plain:
        plain.sendall(_api_versions_request())
        try:
            answer = plain.recv(4096)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    assert answer[4:8] != struct.pack(">i", 1), "the controller answered a plain client"
    # TLS with the stack's CA but no client certificate: refused.
    context = ssl.create_default_context(cafile=str(settings.kafka.ssl_ca_location))
    refused = (ssl.SSLError, ConnectionResetError, BrokenPipeError, EOFError)
    with (
        pytest.raises(refused),
        socket.create_connection(address, timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(_api_versions_request())
        if not tls.recv(4096):  # TLS 1.3: the refusal comes with the first read
            raise EOFError("closed without an answer")


def test_status_secure_shows_the_secure_stack_up_at_its_own_addresses(secure_pipeline_settings):
    settings = secure_pipeline_settings
    result = run_pipeline("stack", "status", "--secure", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pipeline stack (secure)" in result.stdout
    for address in (
        settings.kafka.bootstrap_servers,
        settings.elasticsearch.url,
        f"127.0.0.1:{settings.stack.postgres_port}",
    ):
        assert address in result.stdout, address
    for secret in _secrets(settings):
        assert secret not in result.stdout + result.stderr


def test_kcat_reaches_the_secure_kafka_with_the_written_librdkafka_properties(
    secure_pipeline_settings,
):
    settings = secure_pipeline_settings
    properties = settings.stack.home / "librdkafka.properties"
    assert properties.stat().st_mode & 0o777 == 0o600
    result = subprocess.run(
        ["kcat", "-F", str(properties), "-L", "-m", "30"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"sasl_ssl://{settings.kafka.bootstrap_servers}/1" in result.stdout


def test_the_kafka_and_elasticsearch_data_folders_are_their_servers_alone(
    secure_pipeline_settings,
):
    # Every event and document is in them: readable by other local users, they were the way
    # around the stack's passwords (PostgreSQL keeps its data folder 0700 on its own).
    state = secure_pipeline_settings.stack.home / "state"
    for folder in (state / "kafka" / "data", state / "elasticsearch" / "data"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder

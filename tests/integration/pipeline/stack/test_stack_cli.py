import contextlib
import json
import shutil
import socket
import subprocess
import threading

import psutil
import pytest

from pipeline.ports import free_ports
from tests.support.stack_cli import run_pipeline


def test_status_exits_zero_and_shows_every_address_and_elasticsearch_version(
    pipeline_stack, postgres_stack, pipeline_settings
):
    result = run_pipeline("stack", "status")
    assert result.returncode == 0, result.stderr
    assert pipeline_settings.kafka.bootstrap_servers in result.stdout
    assert pipeline_settings.elasticsearch.url in result.stdout
    assert f"127.0.0.1:{pipeline_settings.stack.postgres_port}" in result.stdout
    assert pipeline_stack.elasticsearch.version is not None
    assert pipeline_stack.elasticsearch.version in result.stdout
    if "kafka" in pipeline_stack.records:
        assert pipeline_settings.stack.kafka_version in result.stdout


def test_up_again_reuses_what_answers(pipeline_stack, postgres_stack):
    result = run_pipeline("stack", "up")
    assert result.returncode == 0, result.stderr
    assert "started nothing (already answering)" in result.stderr


def test_kcat_lists_the_brokers_metadata(pipeline_stack, pipeline_settings, new_topic):
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat is installed by `make test` (Debian package kcat)"
    topic = new_topic(partitions=4)
    result = subprocess.run(
        [kcat, "-b", pipeline_settings.kafka.bootstrap_servers, "-L", "-J", "-t", topic],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    metadata = json.loads(result.stdout)
    assert [broker["name"] for broker in metadata["brokers"]] == [
        pipeline_settings.kafka.bootstrap_servers
    ]
    [described] = metadata["topics"]
    assert described["topic"] == topic
    assert len(described["partitions"]) == 4


def test_elasticsearch_cluster_health_is_green_or_yellow(elasticsearch_client):
    health = elasticsearch_client.cluster.health()
    assert health["status"] in ("green", "yellow")
    assert health["number_of_nodes"] == 1


def test_a_port_taken_by_something_else_is_a_one_line_error(pipeline_stack, isolated_stack_env):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    stop = threading.Event()

    def accept_and_stay_silent():
        listener.settimeout(0.2)
        connections = []
        while not stop.is_set():
            with contextlib.suppress(OSError):
                connections.append(listener.accept()[0])
        for connection in connections:
            connection.close()

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    try:
        env = {**isolated_stack_env, "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
        result = run_pipeline("stack", "up", env=env)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert result.returncode == 2
    assert f"port {port} is taken by something that is not a healthy Kafka" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_no_java_is_a_one_line_error(pipeline_stack, isolated_stack_env, tmp_path):
    env = {**isolated_stack_env, "PATH": str(tmp_path), "JAVA_HOME": ""}
    result = run_pipeline("stack", "up", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: Java 17 not found")
    assert "Traceback" not in result.stderr


def test_a_start_that_times_out_reports_the_log_tail_and_leaves_nothing_running(
    pipeline_stack, isolated_stack_env
):
    env = {**isolated_stack_env, "PIPELINE_STACK__START_TIMEOUT_S": "0.5"}
    result = run_pipeline("stack", "up", env=env)
    assert result.returncode == 2
    assert "Kafka did not answer within 0.5 s" in result.stderr  # said as set (it was "0 s")
    assert "last lines of" in result.stderr
    home = isolated_stack_env["PIPELINE_STACK__HOME"]
    leftovers = [
        p.pid for p in psutil.process_iter(["cmdline"]) if home in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []


def test_logs_of_a_component_we_started(pipeline_stack):
    if "kafka" not in pipeline_stack.records:
        pytest.skip("this run reuses a Kafka that `pipeline stack up` did not start")
    result = run_pipeline("stack", "logs", "kafka", "-n", "5")
    assert result.returncode == 0
    assert 0 < len(result.stdout.strip().splitlines()) <= 5


def test_a_bad_argument_is_a_usage_error_without_traceback():
    result = run_pipeline("stack", "logs", "zookeeper")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "zookeeper" in result.stderr


def test_the_free_ports_helper_gives_distinct_ports():
    ports = free_ports(5)
    assert len(set(ports)) == 5

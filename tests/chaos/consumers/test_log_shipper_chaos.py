"""The log shipper under faults: killed with SIGKILL mid-batch, and Elasticsearch stopped for 60 s.

Afterwards Elasticsearch holds exactly one document per log record produced: nothing lost
(offsets are committed only after Elasticsearch acknowledged), nothing doubled (the document
id is the record's event id, so what is shipped again overwrites).
"""

import os
import signal
import subprocess
import sys
import time
import uuid

import psutil

from pipeline.kafka.clients import build_producer
from pipeline.logs.elasticsearch import build_elasticsearch
from pipeline.settings import PipelineSettings
from pipeline.stack.manager import StackManager
from tests.support.logs import (
    count_documents,
    document_ids,
    log_alias,
    log_document,
    produce_documents,
)
from tests.support.stack_cli import PIPELINE

RECORDS = 30_000
KILLS = 3
OUTAGE_S = 60
PROGRAM = os.path.join(os.path.dirname(__file__), "..", "..", "support", "log_program.py")


def _start_shipper(env, group, log_path, *extra):
    return subprocess.Popen(
        [PIPELINE, "logs", "ship", "--group", group, *extra],
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("a"),
        env=env,
    )


def _wait_for(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_shipper_killed_mid_batch_again_and_again_loses_and_doubles_nothing(
    pipeline_settings, elasticsearch_client, new_topic, consumer_group, tmp_path
):
    topic = new_topic(3)
    documents = [log_document(n) for n in range(RECORDS)]
    produce_documents(build_producer(pipeline_settings.kafka), topic, documents)
    log = tmp_path / "shipper.log"
    with log_alias(elasticsearch_client) as alias:
        env = {
            **os.environ,
            "PIPELINE_LOGS__TOPIC": topic,
            "PIPELINE_LOGS__DLQ_TOPIC": new_topic(1),
            "PIPELINE_LOGS__INDEX_ALIAS": alias,
            "PIPELINE_LOGS__SHIPPER_BATCH_SIZE": "500",
            # The group forgets a killed shipper after 6 s (the least allowed) instead of 10 s:
            # each restart waits for that before it gets the partitions.
            "PIPELINE_LOGS__SHIPPER_SESSION_TIMEOUT_MS": "6000",
        }
        shipped_before = 0
        for kill in range(KILLS):
            shipper = _start_shipper(env, consumer_group, log)
            # wait until this run has shipped something more, so the kill lands mid-stream
            target = shipped_before + 1000
            _wait_for(
                lambda: count_documents(elasticsearch_client, alias) > target,  # noqa: B023
                120,
                f"progress before kill {kill + 1}",
            )
            shipper.send_signal(signal.SIGKILL)
            shipper.wait(30)
            shipped_before = count_documents(elasticsearch_client, alias)
            assert shipped_before < RECORDS, "the shipper finished before it could be killed"
        final = _start_shipper(env, consumer_group, log, "--until-idle", "5")
        assert final.wait(300) == 0, log.read_text()[-2000:]

        # (the shipper's own log lines are shipped too, as service log-shipper)
        ids = document_ids(elasticsearch_client, alias, service="test-svc")
        assert len(ids) == RECORDS
        assert set(ids) == {d["event"]["id"] for d in documents}


def _server_processes(record_pid):
    root = psutil.Process(record_pid)
    return [p for p in [root, *root.children(recursive=True)] if "java" in p.name()]


def test_elasticsearch_stopped_for_a_minute_under_load_loses_and_doubles_nothing(
    pipeline_settings, isolated_stack_env, new_topic, consumer_group, tmp_path, monkeypatch
):
    # A second Elasticsearch of our own (the shared one keeps serving everyone else); Kafka is
    # the shared one.
    env = {**isolated_stack_env, "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": (
        pipeline_settings.kafka.bootstrap_servers
    )}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = PipelineSettings()
    manager = StackManager(settings)
    assert manager.up(only={"elasticsearch"}) == {"elasticsearch"}

    topic = new_topic(3)
    alias = f"chaos-logs-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        **env,
        "PIPELINE_LOGS__TOPIC": topic,
        "PIPELINE_LOGS__DLQ_TOPIC": new_topic(1),
        "PIPELINE_LOGS__INDEX_ALIAS": alias,
        "PIPELINE_LOGS__OUTAGE_MAX_BACKOFF_S": "5",
    }
    log = tmp_path / "shipper.log"
    shipper = _start_shipper(env, consumer_group, log)
    es = build_elasticsearch(settings.elasticsearch)
    warm_up, lines = 50, 4_000
    subprocess.run([sys.executable, PROGRAM, "chaos-load", "corr-chaos", str(warm_up)],
                   env=env, check=True, timeout=60, capture_output=True)  # fmt: skip
    # The load: a program logging ~40 lines/s for well over a minute, through the outage.
    program = subprocess.Popen(
        [sys.executable, PROGRAM, "chaos-load", "corr-chaos", str(lines), "--sleep", "0.02"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    lines += warm_up
    try:
        _wait_for(lambda: count_documents(es, alias) > warm_up, 120, "the load being shipped")
        stopped = [p for p in _server_processes(manager.status().records["elasticsearch"].pid)]
        for process in stopped:
            process.send_signal(signal.SIGKILL)
        psutil.wait_procs(stopped, timeout=30)
        time.sleep(OUTAGE_S)
        # Observed at the end of the minute: Elasticsearch is still away, the shipper noticed
        # it meanwhile and is still running, and the load is still logging through it.
        unreachable = not es.options(request_timeout=2, max_retries=0).ping()
        assert unreachable, "Elasticsearch answered before the outage ended"
        assert "elasticsearch unreachable" in log.read_text(), "the shipper missed the outage"
        assert shipper.poll() is None, "the shipper gave up during the outage"
        assert program.poll() is None, "the load ended before the outage did"
        assert manager.up(only={"elasticsearch"}) == {"elasticsearch"}
        assert program.wait(300) == 0
        _wait_for(
            lambda: count_documents(es, alias, "chaos-load") >= lines,
            180,
            "every line in Elasticsearch",
        )
    finally:
        shipper.send_signal(signal.SIGTERM)
        shipper.wait(60)
        program.kill()
    assert shipper.returncode == 0, log.read_text()[-2000:]
    report = log.read_text()
    assert "elasticsearch unreachable" in report and "consumption resumed" in report
    ids = document_ids(es, alias, service="chaos-load")  # not the shipper's own lines
    assert len(ids) == lines == len(set(ids))
    assert (
        es.count(index=alias, query={"term": {"pipeline.correlation_id": "corr-chaos"}})["count"]
        == lines
    )

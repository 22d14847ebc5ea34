"""configure_logging and SIGTERM: a program stopped the way Docker, Kubernetes and systemd stop
it first flushes its Kafka log handler, which says what it could not send (and sends what it
can), then ends by the signal as before, instead of ending at once with its last records lost
without a word."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from pipeline.logs import setup

# A program that logs through configure_logging to a Kafka that is not there (nothing is
# delivered, so the handler's note counts every record), then waits to be stopped; a thread
# of its own that is no daemon runs meanwhile.
_PROGRAM = textwrap.dedent(
    """
    import logging, threading, time
    from pipeline.logs import configure_logging
    from pipeline.settings import PipelineSettings

    configure_logging(PipelineSettings(), "sigterm-test", console="json", {option})
    for n in range(5):
        logging.getLogger("sigterm-test").warning("line %d", n)
    threading.Thread(target=lambda: [time.sleep(0.1) for _ in range(6000)]).start()
    print("ready", flush=True)
    time.sleep(600)
    """
)


def _stopped_by_sigterm(option: str) -> tuple[int, str]:
    env = {
        **os.environ,
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "PIPELINE_LOGS__FLUSH_TIMEOUT_S": "0.5",
    }
    child = subprocess.Popen(
        [sys.executable, "-c", _PROGRAM.format(option=option)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode, stderr


def test_sigterm_flushes_the_kafka_handler_then_ends_the_program_by_the_signal():
    returncode, stderr = _stopped_by_sigterm("")
    # Ended by SIGTERM as before (a supervisor sees the same), its thread notwithstanding ...
    assert returncode == -signal.SIGTERM, stderr
    # ... after the handler counted the records Kafka never took.
    assert "kafka log handler: 5 records not delivered" in stderr, stderr


def test_without_flush_on_sigterm_the_default_action_ends_the_program_at_once():
    returncode, stderr = _stopped_by_sigterm("flush_on_sigterm=False")
    assert returncode == -signal.SIGTERM
    assert "records not delivered" not in stderr


def test_a_program_with_its_own_sigterm_handler_keeps_it():
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # the program's own
    try:
        assert setup.flush_logs_on_sigterm() is False
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert setup.flush_logs_on_sigterm() is True
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)

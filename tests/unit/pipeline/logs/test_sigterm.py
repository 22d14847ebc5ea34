"""configure_logging and SIGTERM: a program stopped the way Docker, Kubernetes and systemd stop
it exits through its exit hooks, so the log handler says what it could not send (and sends
what it can), instead of ending at once with its last records lost without a word."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline.logs import setup

# A program that logs through configure_logging to a Kafka that is not there (nothing is
# delivered, so the handler's exit note counts every record), then waits to be stopped.
_PROGRAM = textwrap.dedent(
    """
    import logging, sys, time
    from pipeline.logs import configure_logging
    from pipeline.settings import PipelineSettings

    configure_logging(PipelineSettings(), "sigterm-test", console="json", {option})
    for n in range(5):
        logging.getLogger("sigterm-test").warning("line %d", n)
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


def test_sigterm_exits_through_the_exit_hooks_and_the_handler_counts_what_it_did_not_send():
    returncode, stderr = _stopped_by_sigterm("")
    assert returncode == 143, stderr
    assert "kafka log handler: 5 records not delivered" in stderr, stderr


def test_without_exit_on_sigterm_the_default_action_ends_the_program_at_once():
    returncode, stderr = _stopped_by_sigterm("exit_on_sigterm=False")
    assert returncode == -signal.SIGTERM
    assert "records not delivered" not in stderr


def test_a_program_with_its_own_sigterm_handler_keeps_it():
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # the program's own
    try:
        assert setup.exit_through_hooks_on_sigterm() is False
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert setup.exit_through_hooks_on_sigterm() is True
        with pytest.raises(SystemExit) as exited:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs at the next bytecode; bounded if it never does
        assert exited.value.code == 143
    finally:
        signal.signal(signal.SIGTERM, previous)

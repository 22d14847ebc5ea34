"""``StackManager.down`` on a stack home of the test's own, no process started: what ``--purge``
deletes (with ``--only``, one component's data; without, everything, and the secure stack's
credentials), and a secure stack whose credentials are unreadable can still be deleted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.settings import PipelineSettings, StackSettings
from pipeline.stack import processes
from pipeline.stack.log_tail import cause_lines, log_size
from pipeline.stack.manager import StackManager
from pipeline.stack.preflight import StackError
from pipeline.stack.secure import SecureStack
from pipeline.stack.status import COMPONENTS


@pytest.fixture(autouse=True)
def nothing_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """No server answers at the stack's ports (unit tests have no network)."""
    monkeypatch.setattr("pipeline.stack.manager.port_answers", lambda host, port: False)


def _settings(home: Path) -> PipelineSettings:
    return PipelineSettings(stack=StackSettings(home=home))


def _not_running(name: str, folder: Path) -> processes.ProcessRecord:
    """A record whose process has ended: this test's own pid with another start, which
    ``processes.find`` never takes for it (nothing is signalled)."""
    return processes.ProcessRecord(
        name=name,
        pid=os.getpid(),
        create_time=0.0,
        version="1",
        address="127.0.0.1:1",
        log=str(folder / f"{name}.log"),
        start_ticks=-1,
    )


def _stack_with_data(manager: StackManager) -> dict[str, Path]:
    """Each component's folder with a data file, and a process record of each."""
    data = {}
    records = {}
    for name in COMPONENTS:
        folder = manager.state_dir / name
        (folder / "data").mkdir(parents=True)
        data[name] = folder / "data" / "stored"
        data[name].write_text(f"{name}'s data")
        records[name] = _not_running(name, folder)
    processes.save_records(manager.state_dir / "processes.json", records)
    return data


def _recorded(manager: StackManager) -> set[str]:
    return set(processes.load_records(manager.state_dir / "processes.json"))


@pytest.mark.parametrize("only", COMPONENTS)
def test_purge_with_only_deletes_that_components_data_alone(
    tmp_path, clean_pipeline_environment, only
):
    manager = StackManager(_settings(tmp_path / "home"))
    data = _stack_with_data(manager)

    manager.down(only={only}, purge=True)

    assert not (manager.state_dir / only).exists()
    others = [name for name in COMPONENTS if name != only]
    for name in others:
        assert data[name].read_text() == f"{name}'s data"
    assert _recorded(manager) == set(others)  # their processes are still known, to stop later


def test_purge_without_only_deletes_every_components_data(tmp_path, clean_pipeline_environment):
    manager = StackManager(_settings(tmp_path / "home"))
    _stack_with_data(manager)

    manager.down(purge=True)

    assert not manager.state_dir.exists()


def test_down_with_only_and_no_purge_keeps_every_components_data(
    tmp_path, clean_pipeline_environment
):
    manager = StackManager(_settings(tmp_path / "home"))
    data = _stack_with_data(manager)

    manager.down(only={"elasticsearch"})

    assert all(path.exists() for path in data.values())
    assert _recorded(manager) == {"kafka", "postgres"}


def test_secure_purge_with_only_keeps_the_credentials(tmp_path, clean_pipeline_environment):
    settings = _settings(tmp_path / "home")
    credentials = SecureStack(settings).prepare()
    manager = StackManager(settings, secure=True)
    _stack_with_data(manager)

    manager.down(only={"kafka"}, purge=True)

    assert not (manager.state_dir / "kafka").exists()
    assert (manager.state_dir / "postgres" / "data" / "stored").exists()
    assert SecureStack(settings).load_credentials() == credentials


def test_an_unreadable_secure_stack_is_deleted_by_the_command_its_error_advises(
    tmp_path, clean_pipeline_environment
):
    settings = _settings(tmp_path / "home")
    secure = SecureStack(settings)
    old = secure.prepare()
    secure.credentials_file.write_text("{")  # damaged
    manager = StackManager(settings, secure=True)  # down needs no credentials
    _stack_with_data(manager)
    with pytest.raises(StackError, match=r"pipeline stack down --secure --purge") as refused:
        manager.status()  # what needs them still refuses, with the advice
    assert str(secure.credentials_file) in str(refused.value)

    manager.down(purge=True)  # the advice: pipeline stack down --secure --purge

    assert not manager.state_dir.exists()
    for path in (secure.credentials_file, secure.env_file, secure.librdkafka_file):
        assert not path.exists()
    assert secure.certificates.ca_certificate.exists()  # clients' trust is kept
    assert secure.load_credentials() is None
    new = secure.prepare()  # what the next `up --secure` does first
    assert set(new.values()).isdisjoint(old.values())
    assert StackManager(settings, secure=True).settings.kafka.sasl_password == new.kafka


def test_a_credentials_file_that_is_a_folder_is_deleted_by_the_advised_purge_too(
    tmp_path, clean_pipeline_environment
):
    settings = _settings(tmp_path / "home")
    secure = SecureStack(settings)
    secure.prepare()
    secure.credentials_file.unlink()
    secure.credentials_file.mkdir()  # unreadable too: the same advice
    manager = StackManager(settings, secure=True)
    with pytest.raises(StackError, match=r"pipeline stack down --secure --purge"):
        manager.status()

    manager.down(purge=True)  # it failed: "credentials.json: Is a directory"

    assert not secure.credentials_file.exists()
    assert secure.prepare()  # and the next up makes new ones


def test_purge_keeps_the_data_of_a_server_that_still_answers_unrecorded(
    tmp_path, clean_pipeline_environment, monkeypatch
):
    # An Elasticsearch whose recorded launcher was killed kept running from this folder: the
    # purge deleted its data under it, and the port stayed taken by a broken server.
    manager = StackManager(_settings(tmp_path / "home"))
    data = _stack_with_data(manager)
    monkeypatch.setattr("pipeline.stack.manager.port_answers", lambda host, port: port == 9200)

    with pytest.raises(StackError, match=r"elasticsearch's data in .* is kept: something still"):
        manager.down(purge=True)

    assert all(path.read_text() for path in data.values())  # nothing purged


def test_down_where_nothing_ever_ran_makes_no_folder(tmp_path, clean_pipeline_environment):
    home = tmp_path / "never-used"

    assert StackManager(_settings(home)).down(purge=True) == []
    assert not home.exists()


def test_a_failed_start_says_the_cause_not_the_java_frames_after_it(tmp_path):
    # Elasticsearch's cause came a dozen lines above its last five, all "at org...".
    log = tmp_path / "elasticsearch.log"
    frames = [f"\tat org.elasticsearch.Frame{n}.run(Frame.java:{n})" for n in range(12)]
    log.write_text(
        "\n".join(["starting", "Invalid initial heap size: -Xms1gb", *frames, "\t... 3 more"])
    )

    said = cause_lines(log)

    assert said == "starting | Invalid initial heap size: -Xms1gb"


def test_a_failed_start_quotes_only_the_lines_its_own_run_wrote(tmp_path):
    # The log is appended to run after run: a start that had written nothing yet quoted the
    # previous run's stop ("closed | ERROR: Elasticsearch exited unexpectedly ...").
    log = tmp_path / "elasticsearch.log"
    log.write_text("[12:45:30] closed\nERROR: Elasticsearch exited unexpectedly\n")
    since = log_size(log)

    assert cause_lines(log, since) == "(nothing written yet)"
    with log.open("a") as more:
        more.write("[12:48:23] starting\n")
    assert cause_lines(log, since) == "[12:48:23] starting"


def test_an_up_that_fails_keeps_its_error_when_the_records_cannot_be_written(tmp_path, monkeypatch):
    # The cleanup's own write failed on the same folder, and its OSError replaced the error
    # that said a process was started and stopped again.
    manager = StackManager(_settings(tmp_path / "home"))
    said = StackError("cannot record kafka's process in ...: it was stopped again")

    def start(health):
        manager._started_now.add("kafka")
        raise said

    def stop(components):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("pipeline.stack.manager.kafka_health", lambda settings: _down())
    monkeypatch.setattr(manager, "_start_kafka", start)
    monkeypatch.setattr(manager, "_stop", stop)

    with pytest.raises(StackError) as error:
        manager.up({"kafka"})

    assert error.value is said


def _down():
    from pipeline.stack.health import Health

    return Health("kafka", "127.0.0.1:9092", False, "nothing listens")


def test_a_process_that_cannot_be_recorded_is_stopped_again(tmp_path, monkeypatch):
    # A state folder taking no new file (a full disk): Kafka kept running unrecorded, which
    # no `down` could stop ("nothing of ours was running"), and the error was 'Error: ...'.
    manager = StackManager(_settings(tmp_path / "home"))
    record = _not_running("kafka", tmp_path)
    stopped = []
    monkeypatch.setattr(processes, "stop", lambda r, *a, **k: stopped.append(r) or True)

    def refused(path, records):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(processes, "save_records", refused)
    with pytest.raises(StackError) as error:
        manager._remember(record)

    assert stopped == [record]
    assert str(error.value).startswith(
        f"cannot record kafka's process in {manager.state_dir / 'processes.json'} "
        "(Operation not permitted): it was stopped again"
    )


def test_a_start_that_timed_out_shows_the_log_from_before_it_was_stopped(tmp_path, monkeypatch):
    # The last lines were Kafka's reaction to the stop (a stack trace), not why it was slow.
    manager = StackManager(
        PipelineSettings(stack=StackSettings(home=tmp_path / "home", start_timeout_s=0.01))
    )
    record = _not_running("kafka", tmp_path)
    log = Path(record.log)
    log.write_text("waiting for the controller quorum\n")

    def stop(r, *args, **kwargs):
        log.write_text("Terminating process due to signal SIGTERM\nNullPointerException\n")
        return True

    monkeypatch.setattr(processes, "stop", stop)
    monkeypatch.setattr(processes, "find", lambda r: object())  # still running

    with pytest.raises(StackError) as error:
        manager._await(record, lambda: type("H", (), {"ok": False})(), "Kafka")

    assert "waiting for the controller quorum" in str(error.value)
    assert "SIGTERM" not in str(error.value)
